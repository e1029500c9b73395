#!/usr/bin/env bash
# Builds the peer binaries the integration/e2e tests run against from pinned Go modules
# (spec/testing.md §3) into tests/peers/bin/, and writes bin/versions.txt.
#
# Idempotent: each module has a stamp (sha256 of its go.mod, go.sum and this script); a
# module is rebuilt only when its stamp changed or one of its binaries is missing, so a
# second run returns at once. Needs `go` (PATH or /usr/local/go/bin) and the module proxy;
# honours GOMODCACHE, GOPROXY, GOTOOLCHAIN etc. like any go command.
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

# build_module NAME DIR LDFLAGS PKG=OUT...
#   Builds each package PKG of the Go module in DIR as bin/OUT.
build_module() {
	local name=$1 dir=$here/$2 ldflags=$3; shift 3
	local stamp=$bin/.stamp-$name want spec pkg out missing=0 start
	want=$(cat "$dir/go.mod" "$dir/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
	for spec in "$@"; do [[ -x $bin/${spec#*=} ]] || missing=1; done
	if [[ $missing == 0 && -f $stamp && $(<"$stamp") == "$want" ]]; then
		echo "peers: $name up to date"
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
}

build_module k8s . "$(k8s_ldflags)" \
	k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
	k8s.io/kubernetes/cmd/kubectl=kubectl \
	go.etcd.io/etcd/server/v3=etcd

# Later: headscale, tailscale, upstream-tka as separate module dirs, e.g.
# build_module headscale headscale "" github.com/juanfont/headscale/cmd/headscale=headscale

if [[ $rebuilt == 1 || ! -f $bin/versions.txt ]]; then
	{ go version; cat "$bin"/.versions-*; } >"$bin/versions.txt"
	echo "peers: wrote $bin/versions.txt"
fi
