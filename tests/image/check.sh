#!/usr/bin/env bash
# Image checks.
#
# Without Nix (default) the product's image is assembled from scratch with buildah: the static
# tka-server (glibc static, built here into target/static), the static tailscaled/tailscale of tests/peers,
# Debian's CA bundle, root/nobody/tka:65532 in /etc/passwd and /etc/group (as dockerTools.fakeNss writes
# them), /tmp 1777, /var/lib/tsnet owned by 65532, /etc/tka. With TKA_IMAGE_FROM_NIX=1 the image is
# `nix build .#image` instead. Then the image is run as Kubernetes runs it under Pod Security "restricted":
#
#   podman run --runtime runc --rm --read-only --user 65532:65532 --cap-drop=ALL \
#       --security-opt no-new-privileges --network none [--ulimit … in restricted sandboxes]
#
# and checked: version, check of both guide configs, serve (/healthz 200, /ready 503 naming kubernetes, uid
# 65532, CapEff 0, NoNewPrivs 1, `doctor` inside the running container, clean stop), no /tmp => error naming
# tailscale.runDir, no shell, the image
# config through skopeo, a skopeo round trip through a loopback registry. Prints the image's sizes.
#
#   tests/image/check.sh          (root or sudo: installs podman, buildah, skopeo, runc, docker-registry)
#
# Environment: TKA_SERVER_BIN=<static tka-server> skips the build; TKA_IMAGE_LOGS=<dir> keeps the logs;
# TKA_IMAGE_FROM_NIX=1 checks the Nix-built image instead.
#
# Ends with "N passed, M failed" and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD
IMAGE=localhost/tka-image-check:latest
NAME=tka-image-check-$$

passed=0 failed=0
pass() { passed=$((passed + 1)); printf 'ok    %s\n' "$1"; }
fail() {
	failed=$((failed + 1))
	printf 'FAIL  %s\n' "$1"
	if [[ -n ${2:-} && -s $2 ]]; then sed 's/^/      /' "$2" | tail -40; fi
}
note() { printf '      %s\n' "$*"; }
die() {
	fail "$1" "${2:-}"
	summary
}
summary() {
	echo
	printf 'image: %d passed, %d failed\n' "$passed" "$failed"
	((failed == 0)) && exit 0
	exit 1
}

WORK=$(mktemp -d /tmp/tka-image-check.XXXXXX)
REGISTRY_PID=
NETNS=
CP_PIDS=()
cleanup() {
	local p i
	# kube-apiserver first (it hangs in shutdown once etcd is gone), then etcd; SIGKILL after 10 s. Then
	# anything still in our namespace, by the namespace's own pid list.
	for ((i = ${#CP_PIDS[@]} - 1; i >= 0; i--)); do
		p=${CP_PIDS[i]}
		kill "$p" 2>/dev/null || continue
		timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	if [[ -n $NETNS ]]; then
		"${SUDO[@]}" ip netns pids "$NETNS" 2>/dev/null | xargs -r "${SUDO[@]}" kill -9 2>/dev/null
		"${SUDO[@]}" ip netns delete "$NETNS" 2>/dev/null
	fi
	podman rm -f "$NAME" "$NAME-nokube" "$NAME-live" >/dev/null 2>&1
	podman volume rm -f "$NAME-state" >/dev/null 2>&1
	[[ -n $REGISTRY_PID ]] && kill "$REGISTRY_PID" 2>/dev/null && wait "$REGISTRY_PID" 2>/dev/null
	if [[ -n ${TKA_IMAGE_LOGS:-} ]]; then
		mkdir -p "$TKA_IMAGE_LOGS" && cp "$WORK"/*.log "$WORK"/*.json "$TKA_IMAGE_LOGS"/ 2>/dev/null
	fi
	rm -rf "$WORK"
}
trap cleanup EXIT

SUDO=()
((EUID == 0)) || SUDO=(sudo)

# ------------------------------------------------------------------------------------------------ tools
need_apt() {
	local missing=() pkg
	for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
	((${#missing[@]} == 0)) && return 0
	echo "==> apt-get install ${missing[*]}"
	"${SUDO[@]}" apt-get update -qq >/dev/null &&
		"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
		die "apt-get install ${missing[*]}" "$WORK/apt.log"
}
need_apt podman buildah skopeo runc docker-registry jq curl ca-certificates util-linux binutils
# podman, buildah and skopeo run as root (sudo when not root): the image holds files owned by 65532.
PODMAN=("${SUDO[@]}" "$(type -P podman)")
podman() { "${PODMAN[@]}" "$@"; }
BUILDAH=("${SUDO[@]}" "$(type -P buildah)")
buildah() { "${BUILDAH[@]}" "$@"; }
SKOPEO=("${SUDO[@]}" "$(type -P skopeo)")
skopeo() { "${SKOPEO[@]}" "$@"; }

# is_static FILE: no program interpreter, i.e. no dynamic loader and no libc needed at run time.
is_static() { ! readelf -lW "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DATE=$(git log -1 --format=%cI 2>/dev/null || echo 1970-01-01T00:00:01Z)
EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 1)

# ------------------------------------------------------------------------------------------------ the image
if [[ ${TKA_IMAGE_FROM_NIX:-0} == 1 ]]; then
	echo "==> nix build .#image"
	stream=$(nix --extra-experimental-features 'nix-command flakes' build --no-link --print-out-paths .#image) ||
		die "nix build .#image"
	"$stream" | podman load >"$WORK/load.log" 2>&1 || die "podman load" "$WORK/load.log"
	podman tag "ghcr.io/spechtlabs/tka:$VERSION" "$IMAGE"
	pass "image from nix build .#image"
else
	TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
	STATIC_DIR=$ROOT/target/static
	SERVER=$STATIC_DIR/$TRIPLE/release/tka-server
	if [[ -n ${TKA_SERVER_BIN:-} ]]; then
		# A static tka-server built elsewhere (e.g. a CI cache); it must still pass the static check below.
		SERVER=$TKA_SERVER_BIN
		echo "==> tka-server from TKA_SERVER_BIN=$SERVER"
	else
		echo "==> static tka-server ($TRIPLE, +crt-static, $STATIC_DIR; incremental after the first build)"
		# RUSTFLAGS apply to the target only (--target), so build scripts and proc macros stay dynamic.
		if ! TKA_BUILD_COMMIT=$COMMIT TKA_BUILD_DATE=$DATE CARGO_TARGET_DIR=$STATIC_DIR \
			RUSTFLAGS='-C target-feature=+crt-static' \
			cargo build --release --locked --bins --target "$TRIPLE" >"$WORK/cargo.log" 2>&1; then
			die "static build of tka-server" "$WORK/cargo.log"
		fi
	fi
	is_static "$SERVER" && pass "tka-server is statically linked ($(stat -c %s "$SERVER") bytes)" ||
		fail "tka-server is statically linked"

	PEERS=$ROOT/tests/peers/bin
	if [[ ! -x $PEERS/tailscaled || ! -x $PEERS/tailscale ]]; then
		echo "==> tests/peers/build.sh (tailscaled, tailscale)"
		tests/peers/build.sh >"$WORK/peers.log" 2>&1 || die "tests/peers/build.sh" "$WORK/peers.log"
	fi
	for b in tailscaled tailscale; do
		is_static "$PEERS/$b" && pass "$b is statically linked ($(stat -c %s "$PEERS/$b") bytes)" ||
			fail "$b is statically linked"
	done

	echo "==> assembling $IMAGE from scratch (the product's layout)"
	R=$WORK/rootfs
	mkdir -p "$R"/{bin,etc/ssl/certs,etc/pki/tls/certs,etc/tka,var/empty,var/lib/tsnet,tmp}
	install -m 0555 "$SERVER" "$R/tka-server"
	install -m 0555 "$PEERS/tailscaled" "$PEERS/tailscale" "$R/bin/"
	install -m 0444 /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-bundle.crt"
	ln -s ca-bundle.crt "$R/etc/ssl/certs/ca-certificates.crt"
	ln -s ../../../ssl/certs/ca-bundle.crt "$R/etc/pki/tls/certs/ca-bundle.crt"
	# dockerTools.fakeNss with extraPasswdLines/extraGroupLines for tka.
	cat >"$R/etc/passwd" <<-'EOF'
		root:x:0:0:root user:/var/empty:/bin/sh
		nobody:x:65534:65534:nobody:/var/empty:/bin/sh
		tka:x:65532:65532:tka:/tmp:/sbin/nologin
	EOF
	cat >"$R/etc/group" <<-'EOF'
		root:x:0:
		nobody:x:65534:
		tka:x:65532:
	EOF
	echo 'hosts: files dns' >"$R/etc/nsswitch.conf"
	chmod 0444 "$R/etc/passwd" "$R/etc/group" "$R/etc/nsswitch.conf"
	chmod 1777 "$R/tmp"
	chmod 0700 "$R/var/lib/tsnet"
	"${SUDO[@]}" chown -R 0:0 "$R"
	"${SUDO[@]}" chown 65532:65532 "$R/var/lib/tsnet"
	# Fixed timestamps (the commit time), as the Nix image has.
	"${SUDO[@]}" find "$R" -exec touch -h -d "@$EPOCH" {} +

	ctr=$(buildah from scratch) || die "buildah from scratch"
	mnt=$(buildah mount "$ctr") || die "buildah mount"
	"${SUDO[@]}" cp -a "$R/." "$mnt/"
	buildah umount "$ctr" >/dev/null
	buildah config \
		--os linux --arch "$(go env GOARCH 2>/dev/null || echo amd64)" \
		--user 65532:65532 \
		--entrypoint '["/tka-server"]' \
		--cmd '["serve", "--config", "/etc/tka/config.yaml"]' \
		--env SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt --env PATH=/bin --env HOME=/tmp --env TKA_LOG_FORMAT=json \
		--workingdir / \
		--port 443/tcp --port 8080/tcp \
		--label org.opencontainers.image.title=tka \
		--label "org.opencontainers.image.description=Tailscale Kubernetes Auth server" \
		--label "org.opencontainers.image.source=$(sed -n 's/^repository = "\(.*\)"/\1/p' Cargo.toml)" \
		--label "org.opencontainers.image.version=$VERSION" \
		--label "org.opencontainers.image.revision=$COMMIT" \
		--label "org.opencontainers.image.licenses=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml)" \
		--label "org.opencontainers.image.created=$DATE" \
		"$ctr" || die "buildah config"
	buildah commit --quiet --format oci --identity-label=false --timestamp "$EPOCH" --rm "$ctr" "$IMAGE" \
		>"$WORK/commit.log" 2>&1 || die "buildah commit" "$WORK/commit.log"
	pass "image $IMAGE assembled from scratch"
fi

# ------------------------------------------------------------------------------------------------ run flags
BASE=(--runtime runc --read-only --user 65532:65532 --cap-drop=ALL --security-opt no-new-privileges --network none)
RUN=(--rm "${BASE[@]}")
# Restricted sandboxes refuse runc's default rlimits (RLIMIT_NPROC); use explicit ones there.
if ! podman run "${RUN[@]}" "$IMAGE" version >"$WORK/probe.log" 2>&1; then
	if grep -qi 'rlimit' "$WORK/probe.log"; then
		BASE+=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
		RUN=(--rm "${BASE[@]}")
		note "this sandbox needs explicit rlimits: ${BASE[*]: -4}"
	fi
fi

# ------------------------------------------------------------------------------------------------ checks
echo "==> podman run ${RUN[*]}"

# version
if podman run "${RUN[@]}" "$IMAGE" version >"$WORK/version.log" 2>&1 &&
	grep -q "$VERSION" "$WORK/version.log"; then
	pass "version: $(tr '\n' ' ' <"$WORK/version.log" | cut -c1-100)"
else
	fail "version" "$WORK/version.log"
fi

# check of both guide configs, mounted read-only
for cfg in config-primary config-federated; do
	if podman run "${RUN[@]}" -v "$ROOT/tests/fixtures/$cfg.yaml:/etc/tka/config.yaml:ro" "$IMAGE" \
		check --config /etc/tka/config.yaml >"$WORK/$cfg.log" 2>&1; then
		pass "check --config accepts the guide's $cfg.yaml"
	else
		fail "check --config accepts the guide's $cfg.yaml" "$WORK/$cfg.log"
	fi
done

# serve: a config that keeps tailscaled off the Internet (and --network none anyway), a kubeconfig whose
# apiserver is an unreachable loopback port, /tmp as tmpfs, the state directory as a volume.
mkdir -p "$WORK/etc"
cat >"$WORK/etc/config.yaml" <<'EOF'
tailscale:
  hostname: tka-image-check
  controlURL: http://127.0.0.1:9
operator:
  namespace: tka-system
EOF
cat >"$WORK/etc/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters:
- name: unreachable
  cluster:
    server: https://127.0.0.1:1
    insecure-skip-tls-verify: true
users:
- name: nobody
  user:
    token: not-a-token
contexts:
- name: unreachable
  context: {cluster: unreachable, user: nobody}
current-context: unreachable
EOF
chmod 0644 "$WORK/etc/"*
podman volume create "$NAME-state" >/dev/null
SERVE=(-v "$WORK/etc/config.yaml:/etc/tka/config.yaml:ro" -v "$WORK/etc/kubeconfig:/etc/tka/kubeconfig:ro"
	-e KUBECONFIG=/etc/tka/kubeconfig -v "$NAME-state:/var/lib/tsnet")
# proc_checks PID WHAT: the process as the kernel sees it, and its children (the supervised tailscaled).
proc_checks() {
	local pid=$1 what=$2 status=/proc/$1/status uid gid capeff capprm nnp child cuid
	uid=$(awk '/^Uid:/ {print $2 ":" $3 ":" $4 ":" $5}' "$status")
	gid=$(awk '/^Gid:/ {print $2 ":" $3 ":" $4 ":" $5}' "$status")
	capeff=$(awk '/^CapEff:/ {print $2}' "$status")
	capprm=$(awk '/^CapPrm:/ {print $2}' "$status")
	nnp=$(awk '/^NoNewPrivs:/ {print $2}' "$status")
	[[ $uid == 65532:65532:65532:65532 && $gid == 65532:65532:65532:65532 ]] &&
		pass "$what: runs as uid/gid 65532 (Uid $uid)" || fail "$what: runs as uid/gid 65532 (Uid $uid, Gid $gid)"
	[[ -n $capeff && $((16#$capeff)) == 0 && $((16#$capprm)) == 0 ]] &&
		pass "$what: CapEff 0 (CapEff $capeff, CapPrm $capprm)" || fail "$what: CapEff 0 (CapEff $capeff, CapPrm $capprm)"
	[[ $nnp == 1 ]] && pass "$what: NoNewPrivs 1" || fail "$what: NoNewPrivs 1 (got $nnp)"
	for child in $(pgrep -P "$pid"); do
		cuid=$(awk '/^Uid:/ {print $2}' "/proc/$child/status" 2>/dev/null)
		note "child $child ($(cat "/proc/$child/comm" 2>/dev/null)) runs as uid $cuid"
		[[ -z $cuid || $cuid == 65532 ]] || fail "$what: child process $child runs as uid $cuid"
	done
}

serve_up=0
if podman run -d --name "$NAME" "${BASE[@]}" --tmpfs /tmp "${SERVE[@]}" "$IMAGE" \
	serve --config /etc/tka/config.yaml >"$WORK/run.log" 2>&1; then
	pid=$(podman inspect -f '{{.State.Pid}}' "$NAME")
	# No curl in the image and no network: probe from the host inside the container's network namespace.
	probe() {
		"${SUDO[@]}" nsenter -t "$pid" -n curl -s -o "$WORK/body" -w '%{http_code}' --max-time 3 "$1" 2>/dev/null ||
			true
	}
	code=000
	for _ in $(seq 1 60); do
		[[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]] || break
		code=$(probe http://127.0.0.1:8080/healthz)
		[[ $code == 200 ]] && break
		sleep 0.5
	done
	podman logs "$NAME" >"$WORK/serve.log" 2>&1
	if [[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) != true ]]; then
		# An apiserver outage must never cause a restart loop; /ready reports it.
		fail "serve stays up while the apiserver is unreachable (it exited $(podman inspect -f '{{.State.ExitCode}}' "$NAME"))" \
			"$WORK/serve.log"
	else
		serve_up=1
		[[ $code == 200 ]] && pass "serve: /healthz 200" || fail "serve: /healthz 200 (got $code)" "$WORK/serve.log"
		code=$(probe http://127.0.0.1:8080/ready)
		if [[ $code == 503 ]] && grep -qi kubernetes "$WORK/body"; then
			pass "serve: /ready 503 naming kubernetes ($(tr -d '\n' <"$WORK/body" | cut -c1-120))"
		else
			cp "$WORK/body" "$WORK/ready.body" 2>/dev/null
			fail "serve: /ready 503 naming kubernetes (got $code)" "$WORK/ready.body"
		fi
		code=$(probe http://127.0.0.1:8080/metrics)
		[[ $code == 200 ]] && pass "serve: /metrics 200" || fail "serve: /metrics 200 (got $code)"
		proc_checks "$pid" serve
		if "${SUDO[@]}" find "$(podman volume inspect -f '{{.Mountpoint}}' "$NAME-state")" -maxdepth 0 \
			-user 65532 | grep -q .; then
			pass "serve: the state volume took the image's ownership (65532)"
		else
			fail "serve: the state volume is owned by 65532"
		fi
		started=$(date +%s%N)
		podman stop -t 30 "$NAME" >/dev/null 2>&1
		took=$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
		exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME" 2>/dev/null)
		podman logs "$NAME" >"$WORK/serve.log" 2>&1
		[[ $exit_code == 0 ]] && pass "serve: SIGTERM stops it cleanly (exit 0 after $took s)" ||
			fail "serve: SIGTERM stops it cleanly (exit $exit_code after $took s)" "$WORK/serve.log"
		# JSON in the image by default (its Env sets TKA_LOG_FORMAT; the config does not).
		if [[ -s $WORK/serve.log ]] && jq -e -s 'length > 0 and all(.[]; type == "object" and has("level") and has("timestamp"))' \
			"$WORK/serve.log" >/dev/null 2>&1; then
			pass "serve: logs are JSON lines by default ($(wc -l <"$WORK/serve.log") lines)"
		else
			fail "serve: logs are JSON lines by default" "$WORK/serve.log"
		fi
	fi
	podman rm -f "$NAME" >/dev/null 2>&1
else
	fail "serve: container starts" "$WORK/run.log"
fi

# The runtime security context, on a process that stays up whatever tka-server does: the bundled tailscaled
# in userspace mode, as tka-server supervises it (only when serve could not be examined above).
if ((!serve_up)); then
	if podman run -d --name "$NAME" "${BASE[@]}" --tmpfs /tmp --entrypoint /bin/tailscaled "$IMAGE" \
		--tun=userspace-networking --statedir=/tmp/ts --socket=/tmp/ts.sock --no-logs-no-support \
		>"$WORK/run.log" 2>&1 && sleep 2 &&
		[[ $(podman inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]]; then
		proc_checks "$(podman inspect -f '{{.State.Pid}}' "$NAME")" "/bin/tailscaled (userspace) in the image"
	else
		podman logs "$NAME" >>"$WORK/run.log" 2>&1
		fail "/bin/tailscaled runs in the image" "$WORK/run.log"
	fi
	podman rm -f "$NAME" >/dev/null 2>&1
fi

# serve against a real kube-apiserver (tests/peers) in a private network namespace that only has loopback:
# the server resolves the apiserver by name (`localhost`, through /etc/hosts: name resolution works in the
# static binary without any NSS library in the image), passes its start-up checks, supervises /bin/tailscaled from the image, and is ready except for
# the tailnet (whose control server is unreachable on purpose).
start_controlplane() {
	local bin=$ROOT/tests/peers/bin pki=$WORK/pki n
	[[ -x $bin/etcd && -x $bin/kube-apiserver && -x $bin/kubectl ]] || return 1
	mkdir -p "$pki"
	(
		cd "$pki" || exit 1
		openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
		openssl req -x509 -new -key ca.key -subj /CN=tka-image-check-ca -days 1 -out ca.crt 2>/dev/null
		for n in apiserver admin; do
			openssl ecparam -name prime256v1 -genkey -noout -out $n.key 2>/dev/null
		done
		openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr 2>/dev/null
		printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >apiserver.ext
		openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 1 \
			-extfile apiserver.ext -out apiserver.crt 2>/dev/null
		openssl req -new -key admin.key -subj /O=system:masters/CN=admin -out admin.csr 2>/dev/null
		# X.509 v3 (rustls rejects v1 certificates, which `openssl x509 -req` makes without extensions).
		printf 'extendedKeyUsage=clientAuth\n' >admin.ext
		openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -set_serial 3 -days 1 -extfile admin.ext \
			-out admin.crt 2>/dev/null
		openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
		openssl pkey -in sa.key -pubout -out sa.pub
	) || return 1
	NETNS=tkaimg$$
	"${SUDO[@]}" ip netns add "$NETNS" && "${SUDO[@]}" ip -n "$NETNS" link set lo up || return 1
	in_ns() { "${SUDO[@]}" ip netns exec "$NETNS" "$@"; }
	# Started without the in_ns function, so that $! is the process itself (ip netns exec execs it).
	"${SUDO[@]}" ip netns exec "$NETNS" "$bin/etcd" --name=check --data-dir="$WORK/etcd" --listen-client-urls=http://127.0.0.1:2379 \
		--advertise-client-urls=http://127.0.0.1:2379 --listen-peer-urls=http://127.0.0.1:2380 \
		--initial-advertise-peer-urls=http://127.0.0.1:2380 --initial-cluster=check=http://127.0.0.1:2380 \
		--unsafe-no-fsync --log-level=warn >"$WORK/etcd.log" 2>&1 &
	CP_PIDS+=($!)
	"${SUDO[@]}" ip netns exec "$NETNS" "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 --bind-address=127.0.0.1 \
		--advertise-address=127.0.0.1 --secure-port=6443 --cert-dir="$WORK/apiserver-certs" \
		--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
		--client-ca-file="$pki/ca.crt" --authorization-mode=RBAC \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$pki/sa.pub" \
		--service-account-signing-key-file="$pki/sa.key" --api-audiences=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.0.0.0/24 --enable-priority-and-fairness=false \
		--endpoint-reconciler-type=none --profiling=false >"$WORK/apiserver.log" 2>&1 &
	CP_PIDS+=($!)
	cat >"$WORK/etc/admin.kubeconfig" <<-EOF
		apiVersion: v1
		kind: Config
		clusters:
		- name: check
		  cluster:
		    server: https://localhost:6443
		    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
		users:
		- name: admin
		  user:
		    client-certificate-data: $(base64 -w0 "$pki/admin.crt")
		    client-key-data: $(base64 -w0 "$pki/admin.key")
		contexts:
		- name: check
		  context: {cluster: check, user: admin}
		current-context: check
	EOF
	chmod 0644 "$WORK/etc/admin.kubeconfig"
	kc() { in_ns "$bin/kubectl" --kubeconfig "$WORK/etc/admin.kubeconfig" "$@"; }
	for _ in $(seq 1 120); do kc get --raw /readyz >/dev/null 2>&1 && break; sleep 0.5; done
	kc get --raw /readyz >/dev/null 2>&1 || return 1
	podman run "${RUN[@]}" "$IMAGE" crd >"$WORK/crd.yaml" 2>>"$WORK/apiserver.log" &&
		kc apply -f "$WORK/crd.yaml" >>"$WORK/apiserver.log" 2>&1 &&
		kc create namespace tka-system >>"$WORK/apiserver.log" 2>&1 &&
		kc wait --for condition=established crd/tkasignins.tka.specht-labs.de --timeout=30s >>"$WORK/apiserver.log" 2>&1
}

echo "==> serve against a real kube-apiserver (tests/peers) in network namespace tkaimg$$ (loopback only)"
if start_controlplane; then
	pass "kube-apiserver + etcd up in the private namespace, CRD from the image applied"
	LIVE=(--network "ns:/run/netns/$NETNS" -v "$WORK/etc/config.yaml:/etc/tka/config.yaml:ro"
		-v "$WORK/etc/admin.kubeconfig:/etc/tka/kubeconfig:ro" -e KUBECONFIG=/etc/tka/kubeconfig
		-v "$NAME-state:/var/lib/tsnet")
	# BASE without "--network none" (the namespace is given by LIVE).
	LIVE_BASE=()
	skipnext=0
	for a in "${BASE[@]}"; do
		if ((skipnext)); then skipnext=0; continue; fi
		if [[ $a == --network ]]; then skipnext=1; continue; fi
		LIVE_BASE+=("$a")
	done
	if podman run -d --name "$NAME-live" "${LIVE_BASE[@]}" --tmpfs /tmp "${LIVE[@]}" "$IMAGE" \
		serve --config /etc/tka/config.yaml >"$WORK/live-run.log" 2>&1; then
		lpid=$(podman inspect -f '{{.State.Pid}}' "$NAME-live")
		lprobe() {
			"${SUDO[@]}" ip netns exec "$NETNS" curl -s -o "$WORK/body" -w '%{http_code}' --max-time 3 "$1" 2>/dev/null ||
				true
		}
		code=000
		for _ in $(seq 1 60); do
			[[ $(podman inspect -f '{{.State.Running}}' "$NAME-live" 2>/dev/null) == true ]] || break
			code=$(lprobe http://127.0.0.1:8080/healthz)
			[[ $code == 200 ]] && break
			sleep 0.5
		done
		sleep 3 # let the supervised tailscaled start
		podman logs "$NAME-live" >"$WORK/live.log" 2>&1
		if [[ $(podman inspect -f '{{.State.Running}}' "$NAME-live" 2>/dev/null) == true ]]; then
			[[ $code == 200 ]] && pass "serve (live apiserver): /healthz 200" ||
				fail "serve (live apiserver): /healthz 200 (got $code)" "$WORK/live.log"
			code=$(lprobe http://127.0.0.1:8080/ready)
			body=$(tr -d '\n' <"$WORK/body" | cut -c1-200)
			if [[ $code == 503 ]] && ! grep -q '"reason":"kubernetes' "$WORK/body"; then
				pass "serve (live apiserver): /ready 503 while the tailnet is down: $body"
			else
				fail "serve (live apiserver): /ready 503 while the tailnet is down (got $code): $body"
			fi
			code=$(lprobe http://127.0.0.1:8080/metrics)
			[[ $code == 200 ]] && pass "serve (live apiserver): /metrics 200" ||
				fail "serve (live apiserver): /metrics 200 (got $code)"
			if pgrep -P "$lpid" -x tailscaled >/dev/null; then
				pass "serve (live apiserver): supervises /bin/tailscaled from the image"
			else
				fail "serve (live apiserver): supervises /bin/tailscaled from the image" "$WORK/live.log"
			fi
			proc_checks "$lpid" "serve (live apiserver)"
			# The preflight inside the running container (no shell, no curl): the apiserver side passes, the
			# admin kubeconfig may bind cluster-admin (and no allow-list is set), and tailscaled answers through
			# the LocalAPI but is not logged in (no control server).
			podman exec "$NAME-live" /tka-server doctor --config /etc/tka/config.yaml >"$WORK/doctor.log" 2>&1
			rc=$?
			if ((rc == 1)) && grep -q '^✓ kubernetes ' "$WORK/doctor.log" && grep -q '^✓ crd ' "$WORK/doctor.log" &&
				grep -q '^✗ bind .*cluster-admin' "$WORK/doctor.log" && grep -qE '^✗ tailscaled +(NeedsLogin|state )' "$WORK/doctor.log" && grep -qE '^- listener +needs a Running tailscaled' "$WORK/doctor.log"; then
				pass "doctor inside the image: ✓ kubernetes, crd; ✗ bind (admin credentials), tailscaled not logged in (the listener skipped); exit 1"
				sed 's/^/      /' "$WORK/doctor.log"
			else
				fail "doctor inside the image (exit $rc)" "$WORK/doctor.log"
			fi
			podman exec "$NAME-live" /tka-server doctor --config /etc/tka/config.yaml -o json >"$WORK/doctor.json" 2>&1
			if jq -e '.ok == false and (.checks | map(.name) | index("crd") != null)' "$WORK/doctor.json" >/dev/null; then
				pass "doctor -o json inside the image"
			else
				fail "doctor -o json inside the image" "$WORK/doctor.json"
			fi
			if "${SUDO[@]}" find "$(podman volume inspect -f '{{.Mountpoint}}' "$NAME-state")" -maxdepth 0 \
				-user 65532 | grep -q .; then
				pass "serve (live apiserver): the state volume took the image's ownership (65532)"
			else
				fail "serve (live apiserver): the state volume is owned by 65532"
			fi
			started=$(date +%s%N)
			podman stop -t 30 "$NAME-live" >/dev/null 2>&1
			took=$(awk -v a="$started" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
			exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME-live" 2>/dev/null)
			podman logs "$NAME-live" >"$WORK/live.log" 2>&1
			[[ $exit_code == 0 ]] && pass "serve (live apiserver): SIGTERM stops it cleanly (exit 0 after $took s)" ||
				fail "serve (live apiserver): SIGTERM stops it cleanly (exit $exit_code after $took s)" "$WORK/live.log"
		else
			fail "serve (live apiserver) stays up (exit $(podman inspect -f '{{.State.ExitCode}}' "$NAME-live"))" \
				"$WORK/live.log"
		fi
		podman rm -f "$NAME-live" >/dev/null 2>&1
	else
		fail "serve (live apiserver): container starts" "$WORK/live-run.log"
	fi

	# A read-only root without a writable /tmp: the error names the key to change.
	podman run --rm "${LIVE_BASE[@]}" --read-only-tmpfs=false "${LIVE[@]}" "$IMAGE" \
		serve --config /etc/tka/config.yaml >"$WORK/notmp.log" 2>&1
else
	fail "kube-apiserver + etcd from tests/peers in a private network namespace" "$WORK/apiserver.log"
	podman run "${RUN[@]}" --read-only-tmpfs=false "${SERVE[@]}" "$IMAGE" \
		serve --config /etc/tka/config.yaml >"$WORK/notmp.log" 2>&1
fi
rc=$?
if ((rc != 0)) && grep -q 'tailscale.runDir' "$WORK/notmp.log"; then
	pass "no writable /tmp: exits $rc naming tailscale.runDir"
else
	fail "no writable /tmp: exits non-zero naming tailscale.runDir (exit $rc)" "$WORK/notmp.log"
fi

# Without a Kubernetes client configuration (no KUBECONFIG, not in a cluster) the server must say so.
podman run -d --name "$NAME-nokube" "${BASE[@]}" --tmpfs /tmp -v "$WORK/etc/config.yaml:/etc/tka/config.yaml:ro" \
	"$IMAGE" serve --config /etc/tka/config.yaml >"$WORK/nokube.log" 2>&1
rc=$(timeout 15 "${PODMAN[@]}" wait "$NAME-nokube" 2>/dev/null)
podman logs "$NAME-nokube" >>"$WORK/nokube.log" 2>&1
podman rm -f "$NAME-nokube" >/dev/null 2>&1
if [[ -z $rc ]]; then
	fail "serve without a Kubernetes configuration exits naming KUBECONFIG (still running after 15 s)" "$WORK/nokube.log"
elif ((rc != 0)) && grep -q KUBECONFIG "$WORK/nokube.log"; then
	pass "serve without a Kubernetes configuration exits $rc naming KUBECONFIG: $(grep -o '[^"]*KUBECONFIG[^"]*' "$WORK/nokube.log" | head -1 | cut -c1-120)"
else
	fail "serve without a Kubernetes configuration exits non-zero naming KUBECONFIG (exit $rc)" "$WORK/nokube.log"
fi

# No shell in the image.
if podman run "${RUN[@]}" --entrypoint /bin/sh "$IMAGE" -c true >"$WORK/sh.log" 2>&1; then
	fail "--entrypoint /bin/sh fails (a shell ran)" "$WORK/sh.log"
else
	pass "--entrypoint /bin/sh fails: $(grep -o 'no such file or directory\|not found' "$WORK/sh.log" | head -1)"
fi

# ------------------------------------------------------------------------------------------------ skopeo
skopeo inspect --config "containers-storage:$IMAGE" >"$WORK/config.json" 2>"$WORK/skopeo.log" ||
	fail "skopeo inspect --config" "$WORK/skopeo.log"
if jq -e '.config.User == "65532:65532" and .config.Entrypoint == ["/tka-server"]
	and .config.Cmd == ["serve", "--config", "/etc/tka/config.yaml"]
	and .config.Env == ["SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt", "PATH=/bin", "HOME=/tmp", "TKA_LOG_FORMAT=json"]
	and (.config.ExposedPorts | keys) == ["443/tcp", "8080/tcp"]
	and (.config.Labels["org.opencontainers.image.version"] | length > 0)
	and (.config.Labels["org.opencontainers.image.revision"] | length > 0)' "$WORK/config.json" >/dev/null; then
	pass "skopeo inspect --config: User 65532:65532, Entrypoint [\"/tka-server\"], Cmd, Env, ports, labels"
else
	fail "skopeo inspect --config" "$WORK/config.json"
fi

# Layout, from the image's own layers (not from the directory it was made of).
skopeo copy -q "containers-storage:$IMAGE" "oci:$WORK/oci:check" >"$WORK/copy.log" 2>&1 ||
	fail "skopeo copy to an OCI layout" "$WORK/copy.log"
manifest=$(jq -r '.manifests[0].digest | sub("sha256:"; "")' "$WORK/oci/index.json")
: >"$WORK/listing"
for layer in $(jq -r '.layers[].digest | sub("sha256:"; "")' "$WORK/oci/blobs/sha256/$manifest"); do
	tar --numeric-owner -tvf "$WORK/oci/blobs/sha256/$layer" >>"$WORK/listing" 2>/dev/null
done
layout_ok=1
expect_entry() { grep -Eq "$1" "$WORK/listing" || { note "missing: $2"; layout_ok=0; }; }
expect_entry ' (\./)?tka-server$' "/tka-server"
expect_entry ' (\./)?bin/tailscaled$' "/bin/tailscaled"
expect_entry ' (\./)?bin/tailscale$' "/bin/tailscale"
expect_entry ' (\./)?etc/ssl/certs/ca-bundle\.crt$' "/etc/ssl/certs/ca-bundle.crt"
expect_entry ' (\./)?etc/ssl/certs/ca-certificates\.crt( -> .*)?$' "/etc/ssl/certs/ca-certificates.crt"
expect_entry ' (\./)?etc/passwd$' "/etc/passwd"
expect_entry ' (\./)?etc/group$' "/etc/group"
expect_entry '^drwxrwxrwt .* (\./)?tmp/?$' "/tmp with mode 1777"
expect_entry '^d[-rwx]{9} 65532/65532 .* (\./)?var/lib/tsnet/?$' "/var/lib/tsnet owned by 65532"
expect_entry '^d.* (\./)?etc/tka/?$' "/etc/tka"
if grep -Ev '^d' "$WORK/listing" | grep -Eq ' (\./)?(bin|usr/bin|sbin)/(sh|bash|ash|dash|busybox|ls|cat)( |$)'; then
	note "a shell or coreutils binary is in the image"
	layout_ok=0
fi
files=$(grep -Evc '^d' "$WORK/listing")
((layout_ok)) && pass "layout: /tka-server, /bin/tailscale{d,}, CA bundle, passwd/group, /tmp 1777, /var/lib/tsnet 65532, /etc/tka; no shell ($files files)" ||
	fail "image layout" "$WORK/listing"
for layer in $(jq -r '.layers[].digest | sub("sha256:"; "")' "$WORK/oci/blobs/sha256/$manifest"); do
	tar -xOf "$WORK/oci/blobs/sha256/$layer" --wildcards '*etc/passwd' 2>/dev/null >>"$WORK/passwd"
	tar -xOf "$WORK/oci/blobs/sha256/$layer" --wildcards '*etc/group' 2>/dev/null >>"$WORK/group"
done
if grep -q '^tka:x:65532:65532:' "$WORK/passwd" && grep -q '^tka:x:65532:' "$WORK/group" &&
	grep -q '^root:x:0:0:' "$WORK/passwd" && grep -q '^nobody:x:65534:65534:' "$WORK/passwd"; then
	pass "/etc/passwd and /etc/group: root, nobody and tka:65532 (as dockerTools.fakeNss)"
else
	cat "$WORK/passwd" "$WORK/group" >"$WORK/nss" 2>/dev/null
	fail "/etc/passwd and /etc/group: root, nobody and tka:65532" "$WORK/nss"
fi

# Round trip through a registry on loopback: push, pull back, same config and layers, and it still runs.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$port}
EOF
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 1 40); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.25; done
REMOTE=127.0.0.1:$port/tka:$VERSION
if skopeo copy -q --dest-tls-verify=false "containers-storage:$IMAGE" "docker://$REMOTE" >"$WORK/push.log" 2>&1 &&
	skopeo copy -q --src-tls-verify=false "docker://$REMOTE" "oci-archive:$WORK/roundtrip.tar:tka" >>"$WORK/push.log" 2>&1 &&
	skopeo inspect --config "oci-archive:$WORK/roundtrip.tar" >"$WORK/config2.json" 2>>"$WORK/push.log" &&
	diff <(jq -S '{config, rootfs}' "$WORK/config.json") <(jq -S '{config, rootfs}' "$WORK/config2.json") >>"$WORK/push.log" &&
	podman rmi -f "$IMAGE" >/dev/null 2>&1 &&
	skopeo copy -q "oci-archive:$WORK/roundtrip.tar" "containers-storage:$IMAGE" >>"$WORK/push.log" 2>&1 &&
	podman run "${RUN[@]}" "$IMAGE" version >>"$WORK/push.log" 2>&1; then
	pass "skopeo round trip: containers-storage -> registry on 127.0.0.1:$port -> oci-archive -> containers-storage, runs"
else
	cat "$WORK/registry.log" >>"$WORK/push.log"
	fail "skopeo round trip through a loopback registry" "$WORK/push.log"
fi

# ------------------------------------------------------------------------------------------------ sizes
if skopeo copy -q "containers-storage:$IMAGE" "docker-archive:$WORK/image.tar:$IMAGE" >/dev/null 2>&1; then
	raw=$(stat -c %s "$WORK/image.tar")
	gz=$(gzip -9 -c "$WORK/image.tar" | wc -c)
	mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
	note "image size: $(mib "$raw") uncompressed (docker-archive), $(mib "$gz") gzip -9 ($raw / $gz bytes)"
	if [[ -n ${SERVER:-} ]]; then
		note "binaries: tka-server $(mib "$(stat -c %s "$SERVER")"), tailscaled $(mib "$(stat -c %s "$PEERS/tailscaled")"), tailscale $(mib "$(stat -c %s "$PEERS/tailscale")")"
	fi
fi

summary
