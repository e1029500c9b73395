#!/usr/bin/env bash
# Builds the peer binaries the integration/e2e tests run against from pinned Go modules
# into tests/peers/bin/, and writes bin/versions.txt.
#
#   build.sh [GROUP|MODULE]...   no argument (or "all") builds every peer
#     kube     k8s module (.):            kube-apiserver, kubectl, etcd
#     tailnet  headscale module:          headscale
#              tailscale module:          tailscaled, tailscale
#     kustomize kustomize-5.0.1, -5.8.2:  kustomize-5.0.1, kustomize-5.8.2 (the oldest v5 and the newest
#                                         the manifests are rendered with; not part of "all")
#     upstream upstream-tka module:       ts-k8s-auth (the upstream Go CLI, wire-compatibility client)
#   Modules can also be named directly (k8s, headscale, tailscale, upstream-tka), e.g. CI can run
#   `build.sh kube` first and start the integration tests while `build.sh tailnet` runs.
#
# Idempotent: each module has a stamp (sha256 of its go.mod, go.sum, the go version, the
# build flags and the build function); a module is rebuilt only when its stamp changed or
# one of its binaries is missing, so a second run returns at once. Runs for different
# modules may overlap; runs for the same module wait for each other (flock). Binaries are
# replaced by rename, so processes running an old one are unaffected. Needs `go` (PATH or
# /usr/local/go/bin) and the module proxy; honours GOMODCACHE, GOPROXY, GOTOOLCHAIN etc.
# like any go command. TKA_PEERS_DROP_GO_CACHES=1 (set by .ci/run) empties Go's build and module
# caches after a build (several GB the later steps need on a small disk).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bin=$here/bin
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

# Static binaries; -mod=mod lets a fresh checkout fill a missing go.sum line instead of
# failing; -buildvcs=false because the main modules live inside the tka git checkout.
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod -buildvcs=false"

mkdir -p "$bin"
rebuilt=0

# Version stamped into Kubernetes binaries the way hack/lib/version.sh does (otherwise
# they report v0.0.0-master).
k8s_ldflags() {
	local v major minor pkg flags=""
	v=$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ { print $2 }' "$here/go.mod")
	major=${v#v}; major=${major%%.*}
	minor=${v#v*.}; minor=${minor%%.*}
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
	done
	echo "$flags"
}

# Version stamped into tailscale binaries the way build_dist.sh does (otherwise they
# report x.y.z-ERR-BuildInfo, because -buildvcs=false and the module is a dependency).
ts_ldflags() {
	local v
	v=$(awk '$1 == "require" { $1 = ""; $0 = $0 } $1 == "tailscale.com" && $2 ~ /^v/ { print $2 }' "$here/tailscale/go.mod")
	v=${v#v}
	echo " -X tailscale.com/version.longStamp=$v -X tailscale.com/version.shortStamp=$v"
}

# build_module NAME DIR LDFLAGS PKG=OUT...
#   Builds each package PKG of the Go module in DIR as bin/OUT.
build_module() {
	local name=$1 dir=$here/$2 ldflags=$3; shift 3
	local stamp=$bin/.stamp-$name want spec pkg out missing=0 start lock
	# Serialise runs building the same module (lock released on return or exit).
	if command -v flock >/dev/null; then
		exec {lock}>"$bin/.lock-$name"
		flock "$lock"
	fi
	want=$( { cat "$dir/go.mod" "$dir/go.sum"; (cd "$dir" && go version)
		echo "CGO_ENABLED=$CGO_ENABLED GOFLAGS=$GOFLAGS ldflags=$ldflags $*"
		declare -f build_module; } | sha256sum | cut -d' ' -f1)
	for spec in "$@"; do [[ -x $bin/${spec#*=} ]] || missing=1; done
	if [[ $missing == 0 && -f $stamp && $(<"$stamp") == "$want" ]]; then
		echo "peers: $name up to date"
		[[ -z ${lock-} ]] || exec {lock}>&-
		return
	fi
	rm -f "$stamp" "$bin/.versions-$name"
	for spec in "$@"; do
		pkg=${spec%%=*} out=${spec#*=}
		echo "peers: building $out ($pkg) ..."
		start=$SECONDS
		# Build to a temporary name so an interrupted build never leaves a half binary.
		(cd "$dir" && go build -trimpath -ldflags="-s -w$ldflags" -o "$bin/.$out.tmp" "$pkg")
		mv -f "$bin/.$out.tmp" "$bin/$out"
		(cd "$dir" && go list -f "$out	{{.ImportPath}}	{{.Module.Path}} {{.Module.Version}}" "$pkg") >>"$bin/.versions-$name"
		echo "peers: built $out in $((SECONDS - start))s"
	done
	echo "$want" >"$stamp"
	rebuilt=1
	[[ -z ${lock-} ]] || exec {lock}>&-
}

build_k8s() {
	build_module k8s . "$(k8s_ldflags)" \
		k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
		k8s.io/kubernetes/cmd/kubectl=kubectl \
		go.etcd.io/etcd/server/v3=etcd
}

# Separate module so headscale keeps its own tailscale.com version.
build_headscale() {
	build_module headscale headscale "" \
		github.com/juanfont/headscale/cmd/headscale=headscale
}

build_tailscale() {
	build_module tailscale tailscale "$(ts_ldflags)" \
		tailscale.com/cmd/tailscaled=tailscaled \
		tailscale.com/cmd/tailscale=tailscale
}

# One module per version (a module can require only one version of kustomize).
build_kustomize() {
	local dir v
	for dir in "$here"/kustomize-*/; do
		v=$(basename "$dir")
		build_module "$v" "$v" "" sigs.k8s.io/kustomize/kustomize/v5="$v"
	done
}

# The upstream Go TKA's CLI, the client of the e2e wire-compatibility scenario. Separate module so
# upstream keeps its own tailscale.com and client-go versions.
build_upstream_tka() {
	build_module upstream-tka upstream-tka "" \
		github.com/spechtlabs/tka/cmd/cli=ts-k8s-auth
}

modules=()
for arg in "${@:-all}"; do
	case $arg in
	all) modules+=(k8s headscale tailscale upstream_tka) ;;
	kube) modules+=(k8s) ;;
	tailnet) modules+=(headscale tailscale) ;;
	upstream | upstream-tka) modules+=(upstream_tka) ;;
	k8s | headscale | tailscale | kustomize) modules+=("$arg") ;;
	*)
		echo "usage: $0 [all|kube|tailnet|upstream|k8s|headscale|tailscale|upstream-tka|kustomize]..." >&2
		exit 2
		;;
	esac
done
done_modules=" "
for m in "${modules[@]}"; do
	[[ $done_modules == *" $m "* ]] && continue
	"build_$m"
	done_modules+="$m "
done

if [[ $rebuilt == 1 || ! -f $bin/versions.txt ]]; then
	{ go version; cat "$bin"/.versions-*; } >"$bin/.versions.txt.$$"
	mv -f "$bin/.versions.txt.$$" "$bin/versions.txt"
	echo "peers: wrote $bin/versions.txt"
fi

# A one-shot run on a small disk (.ci/run sets TKA_PEERS_DROP_GO_CACHES=1) has no use for Go's build and
# module caches once the binaries are built: together they are several GB the cargo builds after this need.
# Not for runs that overlap another go command (it empties the shared caches).
if [[ ${TKA_PEERS_DROP_GO_CACHES-} == 1 && $rebuilt == 1 ]]; then
	go clean -cache -modcache
	echo "peers: dropped Go's build and module caches (TKA_PEERS_DROP_GO_CACHES=1)"
fi
