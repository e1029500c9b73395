#!/usr/bin/env bash
# End-to-end test of the whole login flow on one machine with real components.
#
#   tests/e2e/run.sh               set up, run every scenario, tear down; terse; exit 1 on the first failed check
#   tests/e2e/run.sh --demo        the same, explaining each step and showing the commands and their output
#   tests/e2e/run.sh --keep        leave everything running afterwards (also after a failure) for debugging
#   tests/e2e/run.sh --down        tear down what a --keep (or crashed) run left behind
#   tests/e2e/run.sh --env-only    only the environment (tailnet, control plane) and its checks, no tka
#   tests/e2e/run.sh --federation  a member cluster too (tests/e2e/federation.sh): login, federation scenario
#   tests/e2e/run.sh --soak        the chaos soak instead of the scenarios (tests/soak/soak.sh; use tests/soak/run.sh)
#   Other flags: --keep-going (run every scenario even after a failure), --no-build (use the binaries in
#   target/debug as they are), --quick (skip the token-expiry scenario, which waits ~11 min for a real
#   apiserver token to expire; CI runs it; --demo implies it), --help.
#   Needs root; run as a user, it runs itself again through sudo (tests/lib/as-root.sh).
#
# Topology: six "machines" as network namespaces plus one holding the bridge that joins them. Nothing is added
# to the host's network and nothing in the namespaces has a route anywhere else, so test traffic can only
# reach 10.77.0.0/24 and the tailnet:
#
#   tkae2e-br    the bridge br0 and one end of each veth pair
#   tkae2e-ctl   10.77.0.1  headscale (control server and embedded DERP, plain HTTP)
#   tkae2e-srv   10.77.0.2  etcd, kube-apiserver :6443, tka-server with its supervised userspace tailscaled
#   tkae2e-cli   10.77.0.3  alice's node: tailscaled with a TUN device, tka, kubectl, curl
#   tkae2e-bob   10.77.0.4  bob's node (no grant)
#   tkae2e-ci    10.77.0.5  a tagged node (tag:ci)
#   tkae2e-carol 10.77.0.7  carol's node: one exec-mode session that lives across a real token expiry
#   tkae2e-dave  10.77.0.8  dave's node: the upstream Go CLI ts-k8s-auth (tests/e2e/upstream.sh)
#
# One tailscaled with a TUN device per namespace: a node has exactly one user, so every user needs a node,
# and two TUN daemons cannot share a namespace's routes. Names resolve through /etc/netns/<ns>/hosts, which
# `ip netns exec` bind-mounts over /etc/hosts (and resolv.conf likewise, so no daemon can touch the host's).
#
# Everything started is recorded in <run dir>/pids (name, pid, start time) and killed by that pid, together
# with its descendants; whatever is still inside one of our namespaces is killed before the namespace is
# deleted. A run starts by removing what an earlier crashed or --keep run left behind.
set -Eeuo pipefail
# A failing set-up command stops the script (set -e); say which, the EXIT trap then tears down.
trap 'echo "ERROR: line $LINENO: $BASH_COMMAND failed (exit $?)" >&2' ERR

# ----------------------------------------------------------------------------------------------- settings
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=tests/lib/as-root.sh
source "$REPO/tests/lib/as-root.sh"
as_root "$@"
PEERS=$REPO/tests/peers/bin
TKA=$REPO/target/debug/tka
TKA_SERVER=$REPO/target/debug/tka-server
E2E_ROOT=$REPO/target/e2e
NS_PREFIX=${TKA_E2E_PREFIX:-tkae2e}  # override to run two harnesses side by side
NAMESPACES=(br ctl srv cli bob ci carol)  # br first: the others attach to its bridge
declare -A IP=([ctl]=10.77.0.1 [srv]=10.77.0.2 [cli]=10.77.0.3 [bob]=10.77.0.4 [ci]=10.77.0.5 [carol]=10.77.0.7)
HEADSCALE_URL=http://10.77.0.1:8080
APISERVER=https://10.77.0.2:6443
TAILNET=tailnet.test
TKA_HOST=tka.$TAILNET
TKA_URL=https://$TKA_HOST
CAP=specht-labs.de/cap/tka
# The uid tka-server runs as (the image's); 0 runs it as root.
SERVER_UID=${TKA_E2E_SERVER_UID:-65532}

DEMO=0 KEEP=0 KEEP_GOING=0 BUILD=1 ENV_ONLY=0 FEDERATION=0 SOAK=0 QUICK=0 MODE=run
usage() { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
for arg in "$@"; do
	case $arg in
	--demo) DEMO=1 QUICK=1 ;; # a newcomer should not wait 11 minutes for a token to expire
	--keep) KEEP=1 ;;
	--keep-going) KEEP_GOING=1 ;;
	--no-build) BUILD=0 ;;
	--env-only) ENV_ONLY=1 ;;
	--federation) FEDERATION=1 ;;
	--soak) SOAK=1 ;;
	--quick) QUICK=1 ;;
	--down) MODE=down ;;
	-h | --help) usage; exit 0 ;;
	*) echo "unknown argument: $arg" >&2; usage >&2; exit 2 ;;
	esac
done

# ------------------------------------------------------------------------------------------------ output
PASSED=0 FAILED=0
if [[ -t 1 ]]; then B=$'\e[1m' G=$'\e[32m' R=$'\e[31m' D=$'\e[2m' N=$'\e[0m'; else B='' G='' R='' D='' N=''; fi

# Demo narration; silent in a plain run.
say() { if ((DEMO)); then printf '\n%s▶ %s%s\n' "$B" "$*" "$N"; fi; }
note() { if ((DEMO)); then printf '  %s\n' "$*"; fi; }
# Progress of the set-up; one line each in a plain run too, so a hang shows where.
phase() { if ((DEMO)); then printf '\n%s== %s%s\n' "$B" "$*" "$N"; else printf '%s\n' "-- $*"; fi; }

pass() {
	PASSED=$((PASSED + 1))
	printf '%sPASS%s %s%s\n' "$G" "$N" "$1" "${2:+ ${D}($2)${N}}"
}
# fail NAME REASON [LOG...]: prints the reason and the tails of the given logs; stops unless --keep-going.
fail() {
	local name=$1 reason=$2 log
	shift 2
	FAILED=$((FAILED + 1))
	printf '%sFAIL%s %s: %s\n' "$R" "$N" "$name" "$reason"
	for log in "$@"; do
		[[ -s $log ]] || continue
		printf '%s--- last lines of %s ---%s\n' "$D" "${log#"$REPO"/}" "$N"
		tail -n 15 "$log" | sed 's/^/    /'
	done
	if ((!KEEP_GOING)); then finish; fi
}
# Setup errors are not checks: report and stop (the EXIT trap tears down).
die() {
	printf '%sERROR%s %s\n' "$R" "$N" "$1" >&2
	shift
	local log
	for log in "$@"; do
		[[ -s $log ]] || continue
		printf -- '--- last lines of %s ---\n' "${log#"$REPO"/}" >&2
		tail -n 25 "$log" | sed 's/^/    /' >&2
	done
	exit 1
}
finish() {
	if [[ -n ${RUN:-} ]] && ((!ENV_ONLY)); then write_results; fi
	echo "(${SECONDS} s)"
	echo "$PASSED passed, $FAILED failed"
	if ((FAILED > 0)); then exit 1; fi
	exit 0
}

# ----------------------------------------------------------------------------------- namespaces, processes
ns() { echo "$NS_PREFIX-$1"; }
# nsx NS CMD...: run CMD inside namespace NS.
nsx() {
	local n=$1
	shift
	ip netns exec "$(ns "$n")" "$@"
}
our_namespaces() { ip netns list 2>/dev/null | awk -v p="^$NS_PREFIX-" '$1 ~ p { print $1 }'; }

# Start time of a pid (clock ticks since boot): with the pid it identifies a process even after pid reuse.
starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }
descendants() {
	local child
	for child in $(ps -o pid= --ppid "$1" 2>/dev/null || true); do
		echo "$child"
		descendants "$child"
	done
}
# running PID...: true if one of the processes exists and is not a zombie.
running() {
	local p
	for p in "$@"; do
		[[ -r /proc/$p/stat && $(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$p/stat" 2>/dev/null) != Z ]] && return 0
	done
	return 1
}
# kill_tree [--crash] PID...: SIGTERM to the processes (a daemon stops its own children in order), after 5 s
# SIGTERM to whatever is left of their trees, after 2 s more SIGKILL. --crash: SIGKILL to the whole trees at
# once, as a crash (no drain, no goodbye).
kill_tree() {
	local tree=() p i crash=0
	if [[ $1 == --crash ]]; then crash=1; shift; fi
	for p in "$@"; do
		tree+=("$p")
		mapfile -t -O "${#tree[@]}" tree < <(descendants "$p")
	done
	if ((crash)); then
		kill -KILL "${tree[@]}" 2>/dev/null || true
		for i in $(seq 100); do running "${tree[@]}" || return 0; sleep 0.1; done
		return 0
	fi
	kill -TERM "$@" 2>/dev/null || true
	for i in $(seq 50); do running "${tree[@]}" || return 0; sleep 0.1; done
	kill -TERM "${tree[@]}" 2>/dev/null || true
	for i in $(seq 20); do running "${tree[@]}" || return 0; sleep 0.1; done
	kill -KILL "${tree[@]}" 2>/dev/null || true
	for i in $(seq 20); do running "${tree[@]}" || return 0; sleep 0.1; done
}

# spawn NAME NS CMD...: start CMD in namespace NS in the background, output in $LOGS/NAME.log, and record it.
# setsid: own session, so a Ctrl-C on the terminal reaches only this script, whose trap stops everything in
# order (and --keep survives the script). Neither setsid (not a group leader here) nor `ip netns exec` forks,
# so $! is the daemon itself. fds 7, 8 (the script's stdout, stderr) and 9 (the run lock) are not inherited:
# a kept daemon must not hold the pipe of `run.sh --keep | tee`.
declare -A PID
spawn() {
	local name=$1 n=$2
	shift 2
	setsid ip netns exec "$(ns "$n")" "$@" </dev/null >"$LOGS/$name.log" 2>&1 7>&- 8>&- 9>&- &
	PID[$name]=$!
	echo "$name ${PID[$name]} $(starttime "${PID[$name]}")" >>"$RUN/pids"
}
alive() { kill -0 "${PID[$1]}" 2>/dev/null; }

# wait_for SECONDS WHAT PROC CMD...: poll CMD every 0.2 s until it succeeds; give up after SECONDS or when the
# process PROC (a spawn name, or - for none) has exited.
wait_for() {
	local secs=$1 what=$2 proc=$3 deadline
	shift 3
	deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if [[ $proc != - ]] && ! alive "$proc"; then die "$proc exited while waiting for $what" "$LOGS/$proc.log"; fi
		if ((SECONDS >= deadline)); then
			die "timed out after ${secs}s waiting for $what" ${proc:+"$LOGS/$proc.log"}
		fi
		sleep 0.2
	done
}

# Kills what a run directory recorded (only processes whose start time still matches), then everything left
# in our namespaces, deletes the namespaces (and with them the veths and the bridge) and their /etc/netns.
teardown_dir() {
	local dir=$1 name pid start n pids
	if [[ -f $dir/pids ]]; then
		# Reverse start order: tka-server before the control plane, clients before headscale.
		while read -r name pid start; do
			if [[ -n $pid && $(starttime "$pid") == "$start" ]]; then kill_tree "$pid"; fi
		done < <(tac "$dir/pids")
	fi
	for n in $(our_namespaces); do
		mapfile -t pids < <(ip netns pids "$n" 2>/dev/null || true)
		if ((${#pids[@]})); then kill_tree "${pids[@]}"; fi
	done
	for n in $(our_namespaces); do ip netns delete "$n" 2>/dev/null || true; done
	rm -rf /etc/netns/"$NS_PREFIX"-*
	rmdir /etc/netns 2>/dev/null || true # only if empty: it may have been there before
}

# Leftovers of our own runs: every run directory not yet torn down (a --keep or crashed run) and any
# tkae2e-* namespace.
cleanup_leftovers() {
	local dir
	for dir in "$E2E_ROOT"/*/; do
		if [[ -f $dir/pids && ! -f $dir/.down ]]; then
			teardown_dir "${dir%/}"
			touch "$dir/.down"
		fi
	done
	teardown_dir /nonexistent
}

# Keeps the 10 newest torn-down run directories.
prune_old_runs() {
	local dir
	find "$E2E_ROOT" -mindepth 2 -maxdepth 2 -name .down -printf '%h\n' | sort -r | tail -n +11 |
		while read -r dir; do rm -rf "$dir"; done
}

# Verifies that nothing is left: no namespace, no recorded process, no /etc/netns entry.
verify_clean() {
	local left=() name pid start
	if our_namespaces | grep -q .; then left+=("namespaces: $(our_namespaces | tr '\n' ' ')"); fi
	if [[ -f $RUN/pids ]]; then
		while read -r name pid start; do
			# A zombie is dead already; it waits for init to reap it.
			if [[ $(starttime "$pid") == "$start" ]] && running "$pid"; then left+=("process $name ($pid)"); fi
		done <"$RUN/pids"
	fi
	if compgen -G "/etc/netns/$NS_PREFIX-*" >/dev/null; then left+=("/etc/netns/$NS_PREFIX-*"); fi
	if grep -q "/run/netns/$NS_PREFIX-" /proc/self/mountinfo; then left+=("netns mounts"); fi
	if ((${#left[@]})); then
		printf '%sERROR%s teardown left: %s\n' "$R" "$N" "${left[*]}" >&2
		return 1
	fi
}

on_exit() {
	local rc=$?
	trap - EXIT INT TERM
	# A signal may have arrived while stdout was redirected to a file.
	exec 1>&7 2>&8
	if [[ -z ${RUN:-} ]]; then exit "$rc"; fi
	if ((KEEP)); then
		print_keep_help
		exit "$rc"
	fi
	phase "tearing down"
	# Background loops of a scenario a failed check cut short (samplers, load) would outlive the run and hold
	# its lock.
	local job
	for job in $(jobs -p); do kill "$job" 2>/dev/null || true; done
	teardown_dir "$RUN"
	touch "$RUN/.down"
	rm -rf "$K8S/etcd" # 60 MB of preallocated WAL; the logs are what tells what happened
	verify_clean || rc=1
	if ((rc != 0)); then echo "logs: ${RUN#"$REPO"/}/logs" >&2; fi
	exit "$rc"
}

print_keep_help() {
	cat <<EOF

Environment kept (--keep). Logs and state: ${RUN#"$REPO"/}
  ip netns exec $(ns cli) env HOME=$RUN/users/alice $TKA --server $TKA_URL --ca-file $PKI/ca.crt login
  ip netns exec $(ns cli) $PEERS/tailscale --socket $RUN/nodes/alice/tailscaled.sock status
  ip netns exec $(ns srv) $PEERS/kubectl --kubeconfig $RUN/k8s/admin.kubeconfig get tkasignins -A
  ip netns exec $(ns ctl) $PEERS/headscale -c $RUN/headscale/config.yaml nodes list
Tear down with: tests/e2e/run.sh --down
EOF
}

# ------------------------------------------------------------------------------------------------ network
setup_network() {
	local n names
	names=$(IFS=,; echo "${NAMESPACES[*]}")
	phase "network namespaces $NS_PREFIX-{$names} on ${IP[ctl]%.*}.0/24"
	note "One namespace per machine of a real deployment, joined by a bridge; nothing reaches the host's network."
	for n in "${NAMESPACES[@]}"; do
		ip netns add "$(ns "$n")"
		nsx "$n" ip link set lo up
	done
	nsx br ip link add br0 type bridge
	nsx br ip link set br0 up
	for n in "${NAMESPACES[@]:1}"; do
		# Both veth ends are created inside namespaces: the host's own namespace never sees them.
		nsx br ip link add "v-$n" type veth peer name eth0 netns "$(ns "$n")"
		nsx br ip link set "v-$n" master br0 up
		nsx "$n" ip addr add "${IP[$n]}/24" dev eth0
		nsx "$n" ip link set eth0 up
		# Own hosts and resolv.conf: bind-mounted by `ip netns exec`, so no daemon sees or edits the host's.
		mkdir -p "/etc/netns/$(ns "$n")"
		printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$(ns "$n")/hosts"
		printf '# tka e2e: no DNS server in this namespace\noptions timeout:1 attempts:1\n' >"/etc/netns/$(ns "$n")/resolv.conf"
	done
}

# -------------------------------------------------------------------------------------------------- PKI
# One throw-away CA signs the apiserver's serving and admin client certificates and tka's certificate.
# openssl rather than Rust: the script has to work before and without the test harness.
# pki_leaf NAME SUBJECT EXTENSIONS...: a P-256 key and a certificate signed by the test CA; run inside $PKI.
pki_leaf() {
	local name=$1 subj=$2
	shift 2
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
	printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature "$@" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile "$name.ext" -out "$name.crt" 2>/dev/null
}
make_pki() {
	phase "test PKI (openssl)"
	note "A throw-away CA for the apiserver, its admin user and tka's HTTPS certificate ($TKA_HOST)."
	mkdir -p "$PKI"
	local keygen=(genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)
	(
		cd "$PKI"
		openssl "${keygen[@]}" -out ca.key 2>/dev/null
		openssl req -x509 -new -key ca.key -subj /CN=tka-e2e-ca -days 2 -out ca.crt \
			-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature
		pki_leaf apiserver /CN=kube-apiserver extendedKeyUsage=serverAuth \
			"subjectAltName=IP:${IP[srv]},IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
		pki_leaf admin "/O=system:masters/CN=e2e-admin" extendedKeyUsage=clientAuth
		pki_leaf tka "/CN=$TKA_HOST" extendedKeyUsage=serverAuth "subjectAltName=DNS:$TKA_HOST"
		openssl "${keygen[@]}" -out sa.key 2>/dev/null
		openssl pkey -in sa.key -pubout -out sa.pub
		rm -f ./*.csr ./*.ext ca.srl
	)
}

# ----------------------------------------------------------------------------------------------- headscale
# write_policy ROLE: the tailnet policy; alice gets ROLE on the tka server node, carol always view. Every node
# may reach every other (so the fault scenarios test tka, not the ACL); bob has no tka grant.
write_policy() {
	cat >"$HS/policy.json" <<EOF
{
  "tagOwners": { "tag:tka": ["alice@"], "tag:ci": ["alice@"] },
  "grants": [
    { "src": ["*"], "dst": ["*"], "ip": ["*"] },
    { "src": ["alice@"], "dst": ["tag:tka"],
      "app": { "$CAP": [ { "role": "$1", "period": "1h" } ] } },
    { "src": ["carol@"], "dst": ["tag:tka"],
      "app": { "$CAP": [ { "role": "view", "period": "1h" } ] } },
    { "src": ["dave@"], "dst": ["tag:tka"],
      "app": { "$CAP": [ { "role": "view", "period": "1h" } ] } }
  ]
}
EOF
}

start_headscale() {
	phase "headscale on $HEADSCALE_URL"
	note "The tailnet's control server (with its DERP relay). Users alice and bob; the policy grants alice"
	note "the capability $CAP {role: view} on nodes tagged tag:tka, and bob nothing."
	mkdir -p "$HS"
	write_policy view
	cat >"$HS/config.yaml" <<EOF
server_url: $HEADSCALE_URL
listen_addr: ${IP[ctl]}:8080
metrics_listen_addr: 127.0.0.1:9090
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
noise:
  private_key_path: $HS/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: true
    region_id: 999
    region_code: e2e
    region_name: tka e2e embedded DERP
    stun_listen_addr: ${IP[ctl]}:3478
    private_key_path: $HS/derp_server_private.key
    automatically_add_embedded_derp_region: true
    ipv4: ${IP[ctl]}
  urls: []
  paths: []
  auto_update_enabled: false
disable_check_updates: true
database:
  type: sqlite
  sqlite:
    path: $HS/db.sqlite
    write_ahead_log: true
log:
  level: info
policy:
  mode: file
  path: $HS/policy.json
dns:
  magic_dns: true
  base_domain: $TAILNET
  override_local_dns: false
  nameservers:
    global: []
unix_socket: $HS/headscale.sock
unix_socket_permission: "0770"
logtail:
  enabled: false
EOF
	spawn headscale ctl "$PEERS/headscale" -c "$HS/config.yaml" serve
	wait_for 30 "headscale /health" headscale nsx ctl curl -fsS "$HEADSCALE_URL/health"
	# Also proves the bridge forwards (there is no ping on this machine).
	wait_for 10 "headscale from $(ns "${NODE_NS[alice]}")" headscale nsx "${NODE_NS[alice]}" curl -fsS "$HEADSCALE_URL/health"
	hs users create alice >/dev/null
	hs users create bob >/dev/null
	hs users create carol >/dev/null
	hs users create dave >/dev/null
}
hs() { nsx ctl "$PEERS/headscale" -c "$HS/config.yaml" "$@"; }
user_id() { hs users list -o json | jq -er --arg n "$1" '.[] | select(.name == $n) | .id'; }
# authkey USER [TAG]: a one-hour pre-auth key of USER, optionally giving the node TAG.
authkey() {
	local args=(preauthkeys create --user "$(user_id "$1")" --expiration 1h -o json)
	if [[ -n ${2:-} ]]; then args+=(--tags "$2"); fi
	hs "${args[@]}" | jq -er .key
}

# ------------------------------------------------------------------------------------------ tailnet nodes
# start_node NAME NS KEY: a tailscaled with a TUN device in namespace NS, logged in with KEY as host NAME.
# TS_DEBUG_USE_DERP_HTTP: headscale's embedded DERP speaks plain HTTP here. DNS and netfilter are left alone.
start_node() {
	local name=$1 n=$2 key=$3 dir=$RUN/nodes/$1
	mkdir -p "$dir"
	spawn "tailscaled-$name" "$n" env TS_DEBUG_USE_DERP_HTTP=1 "$PEERS/tailscaled" \
		--tun=tailscale0 --statedir="$dir" --state="$dir/tailscaled.state" --socket="$dir/tailscaled.sock" \
		--port=0 --no-logs-no-support
	wait_for 20 "tailscaled of $name" "tailscaled-$name" test -S "$dir/tailscaled.sock"
	nsx "$n" "$PEERS/tailscale" --socket "$dir/tailscaled.sock" up --login-server "$HEADSCALE_URL" \
		--authkey "$key" --hostname "$name" --accept-dns=false --netfilter-mode=off --timeout 60s \
		>>"$LOGS/tailscaled-$name.log" 2>&1 || die "tailscale up of $name failed" "$LOGS/tailscaled-$name.log"
}
# ts NAME ARGS...: the tailscale CLI against node NAME's daemon.
ts() {
	local name=$1
	shift
	"$PEERS/tailscale" --socket "$RUN/nodes/$name/tailscaled.sock" "$@"
}
# peer_ip NODE HOSTNAME: the IPv4 tailnet address under which NODE sees peer HOSTNAME (fails if none yet).
peer_ip() {
	ts "$1" status --json | jq -er --arg h "$2" \
		'[.Peer[]? | select(.HostName == $h and .Online != false) | .TailscaleIPs[] | select(contains("."))][0]'
}
# map_tka NS IP: tka.tailnet.test resolves to IP inside NS (MagicDNS is not used: no DNS in the namespaces).
map_tka() { printf '%s %s tka\n' "$2" "$TKA_HOST" >>"/etc/netns/$(ns "$1")/hosts"; }

start_clients() {
	phase "client nodes: alice ($(ns cli)), bob ($(ns bob)), ci ($(ns ci), tag:ci), carol ($(ns carol))"
	note "Each runs tailscaled with a TUN device, like a laptop; the tailnet identifies them by their node key."
	start_node alice cli "$(authkey alice)"
	start_node bob bob "$(authkey bob)"
	start_node ci ci "$(authkey alice tag:ci)"
	start_node carol carol "$(authkey carol)"
}

# -------------------------------------------------------------------------------------- Kubernetes control plane
# The same flags as tests/support/controlplane.rs, but on the bridge address. There is no controller manager.
start_controlplane() {
	phase "etcd + kube-apiserver on $APISERVER"
	note "A real Kubernetes 1.37 API server, built from source by tests/peers/build.sh."
	mkdir -p "$K8S"
	spawn etcd srv "$PEERS/etcd" --name=tka-e2e --data-dir="$K8S/etcd" \
		--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
		--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
		--initial-cluster=tka-e2e=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
	wait_for 60 "etcd /health" etcd nsx srv curl -fsS http://127.0.0.1:2379/health
	launch_kube_apiserver
	write_kubeconfig "$K8S/admin.kubeconfig" admin \
		"client-certificate-data: $(base64 -w0 "$PKI/admin.crt")" "client-key-data: $(base64 -w0 "$PKI/admin.key")"
	wait_for 90 "kube-apiserver /readyz" kube-apiserver nsx srv curl -fsS --cacert "$PKI/ca.crt" \
		--cert "$PKI/admin.crt" --key "$PKI/admin.key" "$APISERVER/readyz"
	wait_for 30 "the bootstrap ClusterRoles" kube-apiserver admin_kubectl get clusterrole view
	aggregate_cluster_roles
}
# Starts (or, after a kill, restarts) the apiserver; etcd keeps the cluster's state.
launch_kube_apiserver() {
	spawn kube-apiserver srv "$PEERS/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address="${IP[srv]}" --advertise-address="${IP[srv]}" --secure-port=6443 \
		--cert-dir="$K8S/apiserver-certs" --tls-cert-file="$PKI/apiserver.crt" \
		--tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" --authorization-mode=RBAC \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
		--service-account-signing-key-file="$PKI/sa.key" --api-audiences=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.0.0.0/24 --enable-priority-and-fairness=false \
		--endpoint-reconciler-type=none --profiling=false
}
# write_kubeconfig FILE USER USER-FIELD...: a kubeconfig for the e2e cluster.
write_kubeconfig() {
	local file=$1 user=$2 field
	shift 2
	{
		cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $APISERVER
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $user
  user:
EOF
		for field in "$@"; do echo "    $field"; done
		cat <<EOF
contexts:
- name: $user
  context: { cluster: e2e, user: $user }
current-context: $user
EOF
	} >"$file"
	chmod 0644 "$file"
}
admin_kubectl() { nsx srv "$PEERS/kubectl" --kubeconfig "$K8S/admin.kubeconfig" "$@"; }

# Without a controller manager the aggregated ClusterRoles view/edit/admin have no rules. Do once what its
# aggregation controller does (tests/integration/harness.rs aggregate_cluster_roles), in dependency order:
# view is aggregated into edit, edit into admin, so each is computed after the one it includes.
aggregate_cluster_roles() {
	local name all rules
	for name in view edit admin; do
		all=$(admin_kubectl get clusterroles -o json)
		rules=$(jq -c --arg n "$name" '
			(.items[] | select(.metadata.name == $n) | [.aggregationRule.clusterRoleSelectors[]?.matchLabels]) as $sel
			| [.items[] | select(.metadata.name != $n)
				| select((.metadata.labels // {}) as $l | any($sel[]; to_entries | all(.[]; $l[.key] == .value)))
				| .rules[]?]' <<<"$all")
		admin_kubectl patch clusterrole "$name" --type merge -p "{\"rules\": $rules}" >/dev/null
	done
}

# ------------------------------------------------------------------------------------------------ tka-server
# Kubernetes objects the server needs: the CRD, its namespace and ServiceAccount, the RBAC it renders for
# itself (nothing more), and a kubeconfig with a token of that ServiceAccount.
install_tka() {
	phase "tka CRD, namespace, ServiceAccount and RBAC"
	note "The server gets only what \`tka-server rbac --allowed-roles view,edit\` renders: it can bind view and edit."
	mkdir -p "$TKAD"
	"$TKA_SERVER" crd | admin_kubectl apply -f - >/dev/null
	admin_kubectl create namespace tka-system >/dev/null
	admin_kubectl create serviceaccount tka-controller -n tka-system >/dev/null
	"$TKA_SERVER" rbac --allowed-roles view,edit --namespace tka-system | admin_kubectl apply -f - >/dev/null
	# As the kustomize base ships it: the apiserver confines the controller's token to tka-user-* bindings.
	admin_kubectl apply -f "$REPO/deploy/kustomize/base/admission-policy.yaml" >/dev/null
	admin_kubectl wait --for condition=established --timeout=30s crd/tkasignins.tka.specht-labs.de >/dev/null
	write_kubeconfig "$TKAD/kubeconfig" tka-controller \
		"token: $(admin_kubectl create token tka-controller -n tka-system --duration 2h)"
}

start_tka_server() {
	phase "tka-server (uid $SERVER_UID) with its supervised tailscaled"
	note "It joins the tailnet as node 'tka' (tag:tka from its auth key) and serves HTTPS on port 443 there."
	mkdir -p "$TKAD/state"
	mkdir -p -m 0700 "$TKAD/run" # private to the server (tailscale.runDir is refused otherwise)
	cp "$PKI/tka.crt" "$PKI/tka.key" "$PKI/ca.crt" "$TKAD/"
	cat >"$TKAD/config.yaml" <<EOF
tailscale:
  hostname: tka
  port: 443
  tailnet: $TAILNET
  controlURL: $HEADSCALE_URL
  stateDir: $TKAD/state
  runDir: $TKAD/run
  tailscaledPath: $PEERS/tailscaled
tls:
  mode: files
  certFile: $TKAD/tka.crt
  keyFile: $TKAD/tka.key
health:
  port: 8080
  bindAddress: 127.0.0.1
operator:
  namespace: tka-system
  clusterName: e2e-cluster
  allowedRoles: [view, edit]
clusterInfo:
  apiEndpoint: $APISERVER
  caData: $(base64 -w0 "$PKI/ca.crt")
api:
  # The timing scenario logs in 20 times in a row from one node; the default 20/s would make it measure
  # the rate limiter.
  rateLimit: 1000
  rateBurst: 1000
  # The apiserver's minimum: carol's exec token really expires while the run goes on (scenario expiry).
  execCredentialTTL: 10m
${TKA_EXTRA_CONFIG:-}
EOF
	"$TKA_SERVER" check --config "$TKAD/config.yaml" >"$LOGS/tka-server-check.log" 2>&1 ||
		die "tka-server check rejected the configuration" "$LOGS/tka-server-check.log"
	# Reusable: the restart scenario starts the server again with the same key (the e2e tailnet lives 1 h).
	SERVER_KEY=$(hs preauthkeys create --user "$(user_id alice)" --tags tag:tka --reusable --expiration 1h -o json | jq -er .key)
	if ((SERVER_UID != 0)); then
		# As in a pod: unprivileged, binding 443 thanks to the namespaced sysctl.
		nsx srv sysctl -qw net.ipv4.ip_unprivileged_port_start=0
		chown -R "$SERVER_UID:$SERVER_UID" "$TKAD"
	fi
	launch_tka_server
	wait_first_ready startup
	wait_for 120 "tka-server /ready (reason ok)" tka-server ready_ok
	wait_for 60 "alice's node to see the tka node" - peer_ip alice tka
	local tka_ip n
	tka_ip=$(peer_ip alice tka)
	for n in "${NODE_NS[@]}"; do map_tka "$n" "$tka_ip"; done
	note "tka node: $tka_ip ($TKA_HOST)"
}
launch_tka_server() {
	local run_as=()
	if ((SERVER_UID != 0)); then run_as=(setpriv --reuid "$SERVER_UID" --regid "$SERVER_UID" --clear-groups); fi
	# SSL_CERT_FILE: federation calls to members verify their certificates against the test CA.
	spawn tka-server srv "${run_as[@]}" env HOME="$TKAD" TS_AUTHKEY="$SERVER_KEY" TS_DEBUG_USE_DERP_HTTP=1 \
		SSL_CERT_FILE="$TKAD/ca.crt" KUBECONFIG="$TKAD/kubeconfig" RUST_LOG="${RUST_LOG:-info}" "$TKA_SERVER" serve --config "$TKAD/config.yaml"
}
# /ready of tka-server: its status code; ready_ok: 200 with reason ok (leader, everything up).
ready_code() { nsx srv curl -s -o /dev/null -m 2 -w '%{http_code}' http://127.0.0.1:8080/ready || true; }
ready_ok() { [[ $(nsx srv curl -sf -m 2 http://127.0.0.1:8080/ready | jq -r .reason) == ok ]]; }
# wait_first_ready NAME: waits for the first 200 of /ready and records its body in FIRST_READY[NAME]. Out of
# cluster there is no leader election, so that first 200 must already be the leader's,
# with the tailnet Running; check_first_ready turns that into a check.
declare -A FIRST_READY
wait_first_ready() {
	local deadline=$((SECONDS + 120)) body
	while :; do
		if body=$(nsx srv curl -sf -m 2 http://127.0.0.1:8080/ready); then break; fi
		alive tka-server || die "tka-server exited while waiting for /ready" "$LOGS/tka-server.log"
		((SECONDS < deadline)) || die "timed out after 120 s waiting for tka-server /ready" "$LOGS/tka-server.log"
		sleep 0.05
	done
	FIRST_READY[$1]=$body
}
check_first_ready() {
	local body=${FIRST_READY[$1]}
	if jq -e '.role == "leader" and .checks.tailnet == true' <<<"$body" >/dev/null 2>&1; then
		pass "$1: the first /ready 200 is the leader's, with the tailnet Running"
	else fail "$1: the first /ready 200 is the leader's, with the tailnet Running" "it was $body" "$LOGS/tka-server.log"; fi
}

# In --env-only mode a plain userspace tailscaled stands in for the server's node, so the tailnet checks
# (reachability, WhoIs with the capability) run without tka-server.
start_standin_server_node() {
	phase "stand-in tka node (userspace tailscaled, tag:tka) in $(ns srv)"
	local dir=$RUN/nodes/tka key
	mkdir -p "$dir"
	key=$(hs preauthkeys create --user "$(user_id alice)" --tags tag:tka --expiration 1h -o json | jq -er .key)
	spawn tailscaled-tka srv env TS_DEBUG_USE_DERP_HTTP=1 "$PEERS/tailscaled" --tun=userspace-networking \
		--statedir="$dir" --state="$dir/tailscaled.state" --socket="$dir/tailscaled.sock" --port=0 --no-logs-no-support
	wait_for 20 "the stand-in tailscaled" tailscaled-tka test -S "$dir/tailscaled.sock"
	nsx srv "$PEERS/tailscale" --socket "$dir/tailscaled.sock" up --login-server "$HEADSCALE_URL" \
		--authkey "$key" --hostname tka --accept-dns=false --timeout 60s >>"$LOGS/tailscaled-tka.log" 2>&1 ||
		die "tailscale up of the stand-in failed" "$LOGS/tailscaled-tka.log"
	wait_for 60 "alice's node to see the tka node" - peer_ip alice tka
}
# The LocalAPI socket of the server's node.
server_socket() { if ((ENV_ONLY)); then echo "$RUN/nodes/tka/tailscaled.sock"; else echo "$TKAD/run/tailscaled.sock"; fi; }

# ------------------------------------------------------------------------------------------ client helpers
# tka_as USER ARGS...: run tka as USER on USER's node; stdout in $OUT, stderr in $ERR, exit code in $RC.
# AS_SERVER=NAME tka_as …: --server NAME instead of the full URL.
declare -A NODE_NS=([alice]=cli [bob]=bob [ci]=ci [carol]=carol)
OUT='' ERR='' RC=0
tka_as() {
	local user=$1 home=$RUN/users/$1
	shift
	mkdir -p "$home"
	RC=0
	nsx "${NODE_NS[$user]}" env -u KUBECONFIG HOME="$home" XDG_CONFIG_HOME="$home/.config" \
		"$TKA" --server "${AS_SERVER:-$TKA_URL}" --ca-file "$PKI/ca.crt" "$@" >"$home/.stdout" 2>"$home/.stderr" || RC=$?
	OUT=$(<"$home/.stdout") ERR=$(<"$home/.stderr")
	printf '$ tka %s   # as %s, exit %s\n%s\n%s\n' "$*" "$user" "$RC" "$OUT" "$ERR" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ tka %s%s   %s# as %s on its node, exit %s%s\n' "$B" "$*" "$N" "$D" "$user" "$RC" "$N"
		if [[ -n $OUT ]]; then printf '%s\n' "$OUT" | sed 's/^/    /'; fi
		if [[ -n $ERR ]]; then printf '%s\n' "$ERR" | sed 's/^/    /'; fi
	fi
}
# tka_login USER [ARGS...]: `tka ARGS` (default `login --quiet`) as USER; on success sets KC to the kubeconfig
# named by the export line (the first entry: the managed file).
KC=
tka_login() {
	local user=$1
	shift
	if (($# == 0)); then set -- login --quiet; fi
	tka_as "$user" "$@"
	KC=
	if ((RC == 0)); then
		KC=$(sed -n "s/^export KUBECONFIG='\(.*\)'$/\1/p" <<<"$OUT")
		KC=${KC%%:*}
	fi
}
# kubectl_as KUBECONFIG ARGS...: kubectl on alice's node (KUBECTL_NS=<namespace>: another); output in $OUT
# (stdout+stderr), exit code in $RC.
kubectl_as() {
	local kc=$1
	shift
	RC=0
	OUT=$(nsx "${KUBECTL_NS:-cli}" "$PEERS/kubectl" --kubeconfig "$kc" "$@" 2>&1) || RC=$?
	printf '$ kubectl %s   # exit %s\n%s\n' "$*" "$RC" "$OUT" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ kubectl %s%s   %s# exit %s%s\n' "$B" "$*" "$N" "$D" "$RC" "$N"
		printf '%s\n' "$OUT" | head -n 8 | sed 's/^/    /'
	fi
}
token_of() { "$PEERS/kubectl" --kubeconfig "$1" config view --raw -o jsonpath='{.users[0].user.token}'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# percentile P VALUES...: nearest-rank percentile.
percentile() {
	local p=$1
	shift
	printf '%s\n' "$@" | sort -n | awk -v p="$p" '{ v[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print v[i] }'
}

# Inside alice's namespace (one `ip netns exec`, so the loop's period is not dominated by set-up):
# logs out, then polls the apiserver with the saved token every 50 ms until 401 or LIMIT ms.
# Prints "<logout exit> <logout ms> <ms from logout's return to the first 401, or -1>".
revoke_and_poll() { # revoke_and_poll USER TOKEN LIMIT_MS HOW(curl|kubectl) SAVED_KUBECONFIG
	local home=$RUN/users/$1
	# The inner script gets its values from the environment, hence single quotes.
	# shellcheck disable=SC2016
	nsx cli env -u KUBECONFIG HOME="$home" XDG_CONFIG_HOME="$home/.config" TKA="$TKA" TKA_URL="$TKA_URL" \
		CA="$PKI/ca.crt" TOKEN="$2" LIMIT="$3" HOW="$4" KC="$5" KUBECTL="$PEERS/kubectl" APISERVER="$APISERVER" \
		bash -c '
		ms() { echo $(($(date +%s%N) / 1000000)); }
		is_401() {
			if [[ $HOW == curl ]]; then
				[[ $(curl -s -o /dev/null -w "%{http_code}" --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$APISERVER/api") == 401 ]]
			else
				"$KUBECTL" --kubeconfig "$KC" auth whoami 2>&1 | grep -q Unauthorized
			fi
		}
		t0=$(ms); rc=0
		"$TKA" --server "$TKA_URL" --ca-file "$CA" logout --quiet >/dev/null 2>&1 || rc=$?
		t1=$(ms)
		while :; do
			if is_401; then echo "$rc $((t1 - t0)) $(($(ms) - t1))"; exit 0; fi
			if (($(ms) - t1 > LIMIT)); then echo "$rc $((t1 - t0)) -1"; exit 0; fi
			sleep 0.05
		done'
}

# ---------------------------------------------------------------------------------------- environment checks
check_environment() {
	say "Environment checks: the tailnet works and the server's node learns the caller's capability"
	local n ip out
	for n in alice bob ci; do
		if [[ $(ts "$n" status --json | jq -r .BackendState) == Running ]]; then pass "env: $n's tailscaled is Running"
		else fail "env: $n's tailscaled is Running" "BackendState $(ts "$n" status --json | jq -r .BackendState)" "$LOGS/tailscaled-$n.log"; fi
	done
	ip=$(peer_ip alice tka)
	for n in alice bob; do
		if out=$(nsx "${NODE_NS[$n]}" "$PEERS/tailscale" --socket "$RUN/nodes/$n/tailscaled.sock" ping -c 5 --timeout 5s "$ip" 2>&1); then
			pass "env: $n reaches the tka node over the tailnet" "$(tail -n1 <<<"$out" | sed 's/^pong from //')"
		else fail "env: $n reaches the tka node over the tailnet" "$out"; fi
	done
	if out=$(nsx cli "$PEERS/kubectl" --kubeconfig "$K8S/admin.kubeconfig" get --raw /version 2>&1); then
		pass "env: kube-apiserver reachable from $(ns cli) at $APISERVER" "$(jq -r .gitVersion <<<"$out")"
	else fail "env: kube-apiserver reachable from $(ns cli)" "$out"; fi
	local sock alice_ip caps role
	sock=$(server_socket)
	alice_ip=$(ts alice ip -4)
	# WhoIs as tka-server does it: LocalAPI over the unix socket, with the caller's address.
	caps=$(curl -sS --unix-socket "$sock" "http://local-tailscaled.sock/localapi/v0/whois?addr=$alice_ip:1" 2>&1 || true)
	role=$(jq -r --arg c "$CAP" '.CapMap[$c][0].role // empty' <<<"$caps" 2>/dev/null || true)
	if [[ $(jq -r .UserProfile.LoginName <<<"$caps" 2>/dev/null) == alice && -n $role ]]; then
		pass "env: WhoIs on the server's node: alice with $CAP" "role $role"
	else fail "env: WhoIs on the server's node: alice with $CAP" "got: $(head -c 400 <<<"$caps")"; fi
}

# ------------------------------------------------------------------------------------------------ scenarios
scenario_login() {
	say "Scenario login: alice (grant: view) signs in, uses the cluster, signs out"
	local s=login user saved t
	# Not --quiet: the summary goes to stderr, stdout still carries only the export line.
	tka_login alice login
	if ((RC != 0)) || [[ ! -f $KC ]]; then fail "$s: tka login as alice" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	pass "$s: tka login as alice" "$KC"
	kubectl_as "$KC" auth whoami -o jsonpath='{.status.userInfo.username}'
	user=$OUT
	if ((RC == 0)) && [[ $user == system:serviceaccount:tka-system:tka-user-alice-* ]]; then pass "$s: kubectl auth whoami" "$user"
	else fail "$s: kubectl auth whoami" "exit $RC: $user"; return; fi
	kubectl_as "$KC" get pods -A
	if ((RC == 0)); then pass "$s: kubectl get pods -A works"; else fail "$s: kubectl get pods -A works" "$OUT"; return; fi
	kubectl_as "$KC" create namespace x
	if ((RC != 0)) && grep -q Forbidden <<<"$OUT"; then pass "$s: kubectl create namespace x is forbidden"
	else fail "$s: kubectl create namespace x is forbidden" "exit $RC: $OUT"; return; fi
	note "The session as the cluster sees it (admin view of the TkaSignin):"
	if ((DEMO)); then admin_kubectl get tkasignins -n tka-system 2>&1 | sed 's/^/    /'; fi
	if admin_kubectl get tkasignins -n tka-system -o json | jq -e '.items | length >= 1' >/dev/null; then
		pass "$s: a TkaSignin exists in tka-system"
	else fail "$s: a TkaSignin exists in tka-system" "none"; return; fi
	identity_headers_ignored
	# Logout deletes the kubeconfig; keep a copy to try the revoked token with.
	saved=$RUN/users/alice/saved.kubeconfig
	cp "$KC" "$saved"
	say "alice signs out; the token she just used must stop working"
	note "kube-apiserver caches a successful token authentication for 10 s, so expect up to ~10 s."
	read -r RC t LAT <<<"$(revoke_and_poll alice "" 15000 kubectl "$saved")"
	echo "login: logout exit $RC in ${t} ms, 401 after ${LAT} ms" >>"$LOGS/steps.log"
	if ((RC != 0)); then fail "$s: tka logout" "exit $RC" "$LOGS/tka-server.log"; return; fi
	pass "$s: tka logout" "${t} ms"
	if [[ ! -e $KC ]]; then pass "$s: logout removed the kubeconfig"; else fail "$s: logout removed the kubeconfig" "$KC still exists"; fi
	if ((LAT >= 0)); then
		pass "$s: kubectl with the saved token gets 401" "after $LAT ms; the token was used < 10 s before logout"
		RESULT_USED_REVOCATION=$LAT
	else fail "$s: kubectl with the saved token gets 401" "still accepted 15 s after logout"; fi
}

# kubectl_exec ARGS...: kubectl on alice's node with alice's home, as her shell would run it: `tka` on PATH for the
# exec plugin, her cache directory, the tka server's CA for the plugin (TKA_CLIENT_CAFILE).
kubectl_exec() { kubectl_exec_as alice "$@"; }
# kubectl_exec_as USER ARGS...: kubectl on USER's node with the kubeconfig $KC, tka on PATH for the plugin.
kubectl_exec_as() {
	local user=$1 home=$RUN/users/$1
	shift
	RC=0
	OUT=$(nsx "${NODE_NS[$user]}" env -u KUBECONFIG -u XDG_RUNTIME_DIR HOME="$home" XDG_CONFIG_HOME="$home/.config" \
		XDG_CACHE_HOME="$home/.cache" PATH="$(dirname "$TKA"):$PATH" TKA_CLIENT_CAFILE="$PKI/ca.crt" \
		"$PEERS/kubectl" --kubeconfig "$KC" "$@" 2>&1) || RC=$?
	printf '$ kubectl %s   # exec plugin, exit %s\n%s\n' "$*" "$RC" "$OUT" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ kubectl %s%s   %s# via `tka credential`, exit %s%s\n' "$B" "$*" "$N" "$D" "$RC" "$N"
		printf '%s\n' "$OUT" | head -n 8 | sed 's/^/    /'
	fi
}

scenario_exec() {
	say "Scenario exec: alice signs in with --exec; kubectl runs \`tka credential\`, which refreshes an expired cache"
	local s=exec home=$RUN/users/alice cache
	tka_login alice login --quiet --exec
	if ((RC != 0)) || [[ ! -f $KC ]]; then fail "$s: tka login --exec" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	if grep -q 'command: tka' "$KC" && ! grep -q 'token:' "$KC"; then pass "$s: the kubeconfig's user is the tka exec plugin"
	else fail "$s: the kubeconfig's user is the tka exec plugin" "$(cat "$KC")"; return; fi
	kubectl_exec auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-alice-* ]]; then pass "$s: kubectl via the exec plugin" "$OUT"
	else fail "$s: kubectl via the exec plugin" "exit $RC: $OUT"; return; fi
	# The token's lifetime "runs out": the cache says expired and holds a token the apiserver rejects.
	cache=$(find "$home/.cache/tka/credentials" -name '*.json' ! -name '*.failed.json' | head -n 1)
	jq '.token = "expired" | .expires_at = "2020-01-01T00:00:00Z" | .refresh_at = "2020-01-01T00:00:00Z"' "$cache" >"$cache.new"
	mv "$cache.new" "$cache"
	kubectl_exec auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-alice-* ]] && [[ $(jq -r .token "$cache") != expired ]]; then
		pass "$s: an expired cache is refreshed over the tailnet"
	else fail "$s: an expired cache is refreshed over the tailnet" "exit $RC: $OUT"; return; fi
	cp "$KC" "$home/saved-exec.kubeconfig"
	tka_as alice logout --quiet
	if ((RC == 0)) && [[ ! -e $cache ]]; then pass "$s: logout deletes the cached credential"
	else fail "$s: logout deletes the cached credential" "exit $RC, cache $(ls "$cache" 2>&1)"; fi
	# A kubeconfig kept from before: the plugin says why on stderr (kubectl shows it) and never prompts.
	KC=$home/saved-exec.kubeconfig
	kubectl_exec get pods
	if ((RC != 0)) && grep -q 'not signed in to .*: run `tka login`' <<<"$OUT"; then pass "$s: after logout kubectl shows the plugin's advice"
	else fail "$s: after logout kubectl shows the plugin's advice" "exit $RC: $OUT"; fi
}

# ------------------------------------------------------------------------------------------ token expiry
# carol signs in with --exec at the start of the run; the other scenarios run while her 10-minute token (the
# apiserver's minimum lifetime, api.execCredentialTTL: 10m) ages; at the end kubectl keeps running through
# the plugin while the token reaches its refresh time and then really expires at the apiserver.

# carol_cache: carol's cached credential file (empty if none).
carol_cache() { find "$RUN/users/carol/.cache/tka/credentials" -name '*.json' ! -name '*.failed.json' 2>/dev/null | head -n 1; }
# token_status TOKEN: the apiserver's HTTP status for a SelfSubjectReview with TOKEN (201 valid, 401 not).
token_status() {
	nsx carol curl -sS -o /dev/null -w '%{http_code}' -m 5 --cacert "$PKI/ca.crt" -X POST \
		-H "Authorization: Bearer $1" -H 'Content-Type: application/json' \
		-d '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}' \
		"$APISERVER/apis/authentication.k8s.io/v1/selfsubjectreviews" 2>/dev/null || true
}
epoch() { date -d "$1" +%s; }

expiry_begin() {
	((QUICK)) && return
	say "Scenario expiry (begins): carol signs in with --exec; her token lives 10 min, the rest of the run goes on"
	local s=expiry cache
	tka_login carol login --quiet --exec
	EXPIRY_KC=$KC
	cache=$(carol_cache)
	if ((RC == 0)) && [[ -n $cache ]]; then pass "$s: carol signs in with an exec-mode kubeconfig" "token expires $(jq -r .expires_at "$cache")"
	else fail "$s: carol signs in with an exec-mode kubeconfig" "exit $RC: $ERR"; return; fi
	KC=$EXPIRY_KC kubectl_exec_as carol auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-carol-* ]]; then pass "$s: kubectl via the plugin" "$OUT"
	else fail "$s: kubectl via the plugin" "exit $RC: $OUT"; return; fi
	EXPIRY_TOKEN=$(jq -r .token "$cache") EXPIRY_AT=$(epoch "$(jq -r .expires_at "$cache")")
	EXPIRY_REFRESH_AT=$(epoch "$(jq -r .refresh_at "$cache")") EXPIRY_T0=$(date +%s)
}

scenario_expiry() {
	((QUICK)) && { echo "SKIP expiry: --quick"; return; }
	[[ -n ${EXPIRY_TOKEN:-} ]] || return # expiry_begin failed (and said so)
	say "Scenario expiry: carol's kubectl keeps working while her token reaches its refresh time and expires"
	local s=expiry cache t1=$EXPIRY_TOKEN t2 code loop deadline n bad tokens
	KC=$EXPIRY_KC
	cache=$(carol_cache)
	if [[ $(jq -r .token "$cache") == "$t1" ]]; then pass "$s: the other scenarios ran; carol's cached token is still the first" "$(($(date +%s) - EXPIRY_T0)) s later"
	else fail "$s: until its refresh time kubectl used the cached token" "the cache holds another token"; return; fi
	phase "expiry: waiting $((EXPIRY_REFRESH_AT - $(date +%s))) s for carol's token to reach its refresh time, then for its expiry"
	# carol runs kubectl every 2 s from now until the old token is dead; each line: exit code and the cached token's hash.
	( while :; do
		kubectl_exec_as carol auth whoami -o jsonpath='{.status.userInfo.username}'
		printf '%s %s %s\n' "$(date +%s)" "$RC" "$(jq -r .token "$(carol_cache)" 2>/dev/null | sha256sum | cut -c1-12)"
		sleep 2
	done ) >"$LOGS/expiry-kubectl.log" 2>&1 &
	loop=$!
	while (($(date +%s) < EXPIRY_REFRESH_AT + 3)); do sleep 1; done
	t2=$(jq -r .token "$cache")
	code=$(token_status "$t1")
	if [[ $t2 != "$t1" && $code == 201 ]]; then
		pass "$s: the plugin refreshed ahead of the expiry: the old token still worked" "refresh at exp − $((EXPIRY_AT - EXPIRY_REFRESH_AT)) s; old token: $code"
	else fail "$s: the plugin refreshed ahead of the expiry" "new token: $([[ $t2 != "$t1" ]] && echo yes || echo no), old token: $code" "$LOGS/expiry-kubectl.log"; fi
	# The apiserver accepts a token up to a minute past its exp (go-jose's leeway), plus its 10 s success cache.
	deadline=$((EXPIRY_AT + 150))
	while code=$(token_status "$t1"); [[ $code != 401 ]] && (($(date +%s) < deadline)); do sleep 1; done
	RESULT_EXPIRY_LAG=$(($(date +%s) - EXPIRY_AT))
	if [[ $code == 401 ]]; then pass "$s: the old token really expired: the apiserver rejects it" "401 at exp + ${RESULT_EXPIRY_LAG} s"
	else fail "$s: the old token really expired" "still $code at exp + ${RESULT_EXPIRY_LAG} s"; fi
	sleep 5 # a few more kubectl calls with the old token dead
	kill "$loop" 2>/dev/null; wait "$loop" 2>/dev/null || true
	n=$(wc -l <"$LOGS/expiry-kubectl.log")
	bad=$(awk '$2 != 0' "$LOGS/expiry-kubectl.log" | wc -l)
	# Distinct cached tokens over time, counting the first one even if the first call already refreshed.
	tokens=$({ printf '%s\n' "$t1" | sha256sum | cut -c1-12; awk '{ print $3 }' "$LOGS/expiry-kubectl.log"; } | uniq | wc -l)
	if ((n >= 10 && bad == 0 && tokens == 2)); then
		pass "$s: kubectl never failed across the expiry, and the token was fetched exactly once" "$n calls over $(awk 'NR == 1 { t = $1 } END { print $1 - t }' "$LOGS/expiry-kubectl.log") s"
	else fail "$s: kubectl never failed across the expiry, and the token was fetched exactly once" "$n calls, $bad failed, $tokens distinct cached tokens" "$LOGS/expiry-kubectl.log"; fi
	tka_as carol logout --quiet
}

# Client-supplied identity headers must not matter: the server asks tailscaled who is calling.
identity_headers_ignored() {
	local out
	say "alice forges identity headers; the server must ask tailscaled, not believe the request"
	note "\$ curl -H 'Tailscale-User-Login: admin@' $TKA_URL/api/v1alpha1/whoami"
	out=$(nsx cli curl -sS --cacert "$PKI/ca.crt" -H 'Tailscale-User-Login: admin@' -H 'Tailscale-User-Name: admin' \
		-H 'X-Forwarded-For: 10.77.0.99' "$TKA_URL/api/v1alpha1/whoami" 2>&1 || true)
	echo "whoami with forged headers: $out" >>"$LOGS/steps.log"
	note "$(jq -c '{login_name, node, selected}' <<<"$out" 2>/dev/null || echo "$out")"
	if [[ $(jq -r .login_name <<<"$out" 2>/dev/null) == alice ]]; then
		pass "headers: forged Tailscale-User-Login is ignored" "login_name alice"
	else fail "headers: forged Tailscale-User-Login is ignored" "whoami: $(head -c 300 <<<"$out")"; fi
}

scenario_forbidden() {
	say "Scenario forbidden: bob has no tka grant"
	tka_login bob
	if ((RC == 3)); then pass "forbidden: tka login as bob exits 3"
	else fail "forbidden: tka login as bob exits 3" "exit $RC: $ERR"; return; fi
	local code
	code=$(nsx bob curl -sS --cacert "$PKI/ca.crt" "$TKA_URL/api/v1alpha1/whoami" | jq -r '.reject.code // .code // empty' 2>/dev/null || true)
	if [[ $code == no_grant ]]; then pass "forbidden: whoami reports no_grant for bob"
	else fail "forbidden: whoami reports no_grant for bob" "got '$code'"; fi
}

scenario_magicdns() {
	say "Scenario MagicDNS: no tailnet configured, --server tka; tka asks alice's tailscaled for the suffix"
	note "The server's certificate names only $TKA_HOST, so the short name alone fails TLS verification."
	local s=magicdns
	AS_SERVER=tka tka_as alice --socket "$RUN/nodes/alice/tailscaled.sock" --debug cluster-info
	if ((RC == 0)) && grep -qF "GET https://$TKA_HOST/api/v1alpha1/cluster-info" <<<"$ERR"; then
		pass "$s: --server tka reaches https://$TKA_HOST (suffix from LocalAPI status)"
	else fail "$s: --server tka reaches https://$TKA_HOST (suffix from LocalAPI status)" "exit $RC: $ERR"; return; fi
	AS_SERVER=tka tka_as alice --socket "$RUN/nodes/alice/missing.sock" --timeout 3s cluster-info
	if ((RC != 0)) && grep -q "certificate verification may fail" <<<"$ERR"; then
		pass "$s: without tailscaled the short name is used, with a warning" "exit $RC"
	else fail "$s: without tailscaled the short name is used, with a warning" "exit $RC: $ERR"; fi
}

scenario_tagged() {
	say "Scenario tagged: a tagged node (tag:ci) is refused by default"
	tka_login ci
	if ((RC == 3)); then pass "tagged: tka login from a tag:ci node exits 3"
	else fail "tagged: tka login from a tag:ci node exits 3" "exit $RC: $ERR"; return; fi
	local body
	body=$(nsx ci curl -sS --cacert "$PKI/ca.crt" "$TKA_URL/api/v1alpha1/whoami" 2>&1 || true)
	if grep -q tagged_node_not_allowed <<<"$body$ERR"; then pass "tagged: the reason is tagged_node_not_allowed"
	else fail "tagged: the reason is tagged_node_not_allowed" "whoami: $(head -c 300 <<<"$body")"; fi
}

# ------------------------------------------------------------------------------------------------ doctors
# server_doctor ARGS...: `tka-server doctor` in the server's namespace, as the server's user, with its
# configuration and credentials (what `kubectl exec deploy/tka-server -- /tka-server doctor` sees in a pod).
# DOCTOR_NS, DOCTOR_DIR, DOCTOR_CONFIG, DOCTOR_PORT: another server (the member, a replica).
server_doctor() {
	local run_as=()
	if ((SERVER_UID != 0)); then run_as=(setpriv --reuid "$SERVER_UID" --regid "$SERVER_UID" --clear-groups); fi
	local dir=${DOCTOR_DIR:-$TKAD}
	RC=0
	OUT=$(nsx "${DOCTOR_NS:-srv}" "${run_as[@]}" env HOME="$dir" KUBECONFIG="$dir/kubeconfig" SSL_CERT_FILE="$dir/ca.crt" \
		${DOCTOR_PORT:+"TKA_HEALTH_PORT=$DOCTOR_PORT"} "$TKA_SERVER" doctor --config "${DOCTOR_CONFIG:-$dir/config.yaml}" "$@" 2>&1) || RC=$?
	printf '$ tka-server doctor %s   # exit %s\n%s\n' "$*" "$RC" "$OUT" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ tka-server doctor %s%s   %s# in the server'"'"'s container, exit %s%s\n' "$B" "$*" "$N" "$D" "$RC" "$N"
		printf '%s\n' "$OUT" | sed 's/^/    /'
	fi
}
# doctor_as USER KUBECONFIG ARGS...: `tka doctor` on USER's node, kubectl and tka on PATH, USER's tailscaled.
doctor_as() {
	local user=$1 kc=$2 home=$RUN/users/$1
	shift 2
	mkdir -p "$home"
	RC=0
	OUT=$(nsx "${NODE_NS[$user]}" env -u KUBECONFIG -u XDG_RUNTIME_DIR ${kc:+"KUBECONFIG=$kc"} HOME="$home" \
		XDG_CONFIG_HOME="$home/.config" XDG_CACHE_HOME="$home/.cache" PATH="$(dirname "$TKA"):$PEERS:$PATH" \
		"$TKA" --server "$TKA_URL" --ca-file "$PKI/ca.crt" --socket "$RUN/nodes/$user/tailscaled.sock" doctor "$@" 2>&1) || RC=$?
	printf '$ tka doctor %s   # as %s, exit %s\n%s\n' "$*" "$user" "$RC" "$OUT" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ tka doctor %s%s   %s# as %s on its node, exit %s%s\n' "$B" "$*" "$N" "$D" "$user" "$RC" "$N"
		printf '%s\n' "$OUT" | sed 's/^/    /'
	fi
}
# has_line PATTERN: $OUT has a line matching the extended regex.
has_line() { grep -qE "$1" <<<"$OUT"; }

scenario_doctor() {
	say "Scenario doctor: one command on each side says what is wrong and what to do"
	local s=doctor role
	server_doctor
	if ((RC == 0)) && has_line '^✓ tailscaled +Running as tka\.' && has_line '^✓ listener .*over the tailnet' && has_line '^✓ bind +binds exactly the allowed roles: view, edit'; then
		pass "$s: tka-server doctor on the healthy server finds no problem" "$(grep -c '^✓' <<<"$OUT") checks passed"
	else fail "$s: tka-server doctor on the healthy server finds no problem" "exit $RC: $OUT"; fi
	server_doctor -o json
	if jq -e '.ok == true and ([.checks[].name] | index("crd") != null)' <<<"$OUT" >/dev/null 2>&1; then pass "$s: tka-server doctor -o json"
	else fail "$s: tka-server doctor -o json" "$OUT"; fi
	note "The server loses a permission (TokenRequests); its doctor names it and the fix."
	role=$(admin_kubectl get role tka-server -n tka-system -o json)
	jq 'del(.metadata.resourceVersion) | .rules |= map(select(.resources != ["serviceaccounts/token"]))' <<<"$role" | admin_kubectl replace -f - >/dev/null
	local deadline=$((SECONDS + 15))
	while server_doctor; ! has_line '^✗ rbac' && ((SECONDS < deadline)); do sleep 0.5; done
	if ((RC == 1)) && has_line '^✗ rbac +missing: create serviceaccounts/token in tka-system' && has_line 'advice: apply the server.s RBAC: `tka-server rbac'; then
		pass "$s: RBAC without TokenRequests: ✗ rbac with the command that fixes it" "exit $RC"
	else fail "$s: RBAC without TokenRequests: ✗ rbac with the command that fixes it" "exit $RC: $OUT"; fi
	"$TKA_SERVER" rbac --allowed-roles view,edit --namespace tka-system | admin_kubectl apply -f - >/dev/null

	doctor_as alice ""
	if ((RC == 0)) && has_line '^✓ tailscaled +Running, logged in as alice' && has_line '^✓ grant +alice on alice\..*role view' && has_line '^✓ clock '; then
		pass "$s: tka doctor as alice: no problems" "$(grep -c '^✓' <<<"$OUT") checks passed"
	else fail "$s: tka doctor as alice: no problems" "exit $RC: $OUT"; fi
	doctor_as bob ""
	if ((RC == 3)) && has_line '^✗ grant .*\(no_grant\)' && has_line 'advice: ask a tailnet admin for a grant'; then
		pass "$s: tka doctor as bob: no grant, exit 3, what to ask for"
	else fail "$s: tka doctor as bob: no grant, exit 3, what to ask for" "exit $RC: $OUT"; fi

	note "alice's kuberc allows only another credential plugin: kubectl would refuse tka."
	tka_login alice login --quiet --exec
	mkdir -p "$RUN/users/alice/.kube"
	printf 'apiVersion: kubectl.config.k8s.io/v1beta1\nkind: Preference\ncredentialPluginPolicy: Allowlist\ncredentialPluginAllowlist:\n- name: gke-gcloud-auth-plugin\n' >"$RUN/users/alice/.kube/kuberc"
	doctor_as alice "$KC"
	local verdict=$OUT verdict_rc=$RC
	kubectl_exec auth whoami
	if ((verdict_rc == 1)) && grep -qE '^✗ kuberc .*does not include tka' <<<"$verdict" && ((RC != 0)) && grep -q 'allowlist' <<<"$OUT"; then
		pass "$s: a kuberc allowlist without tka: ✗ kuberc (exit 1), and kubectl indeed refuses the plugin"
	else fail "$s: a kuberc allowlist without tka: ✗ kuberc (exit 1), and kubectl refuses" "doctor exit $verdict_rc: $verdict; kubectl exit $RC: $OUT"; fi
	rm -f "$RUN/users/alice/.kube/kuberc"

	note "Another shell logs out; this shell's KUBECONFIG still names the deleted file."
	local stale=$KC
	tka_as alice logout --quiet
	doctor_as alice "$stale"
	if ((RC == 1)) && has_line '^✗ kubeconfig +KUBECONFIG names deleted tka file' && has_line 'advice: .*(unset KUBECONFIG|export KUBECONFIG)'; then
		pass "$s: a stale KUBECONFIG entry: ✗ kubeconfig with the line that fixes this shell" "exit $RC"
	else fail "$s: a stale KUBECONFIG entry: ✗ kubeconfig with the fixing line" "exit $RC: $OUT"; fi

	note "bob's tailscaled stops."
	kill_tree "${PID[tailscaled-bob]}"
	doctor_as bob ""
	if ((RC == 5)) && has_line '^✗ tailscaled +no Tailscale daemon answers' && has_line 'advice: start Tailscale'; then
		pass "$s: tailscaled stopped: ✗ tailscaled, exit 5, how to start it"
	else fail "$s: tailscaled stopped: ✗ tailscaled, exit 5" "exit $RC: $OUT"; fi
}

# Scenario self: a tka-server attached to a kernel-TUN tailscaled (node ci, as on a shared host). Any process on
# that host that connects to the node's own tailnet address is WhoIs'd as the node itself; the server must treat
# it as unknown, while other nodes are still identified. tailscale.allowSelfConnections: true lets it through.
# (The node is tagged, so an identified self-connection gets tagged_node_not_allowed: proof it was identified.)
scenario_self() {
	say "Scenario self: connections from the server's own tailnet node are refused (kernel TUN, shared host)"
	local dir=$RUN/tka-self ci_ip allow want code
	ci_ip=$(ts ci ip -4)
	admin_kubectl create namespace tka-self >/dev/null 2>&1 || true
	mkdir -p "$dir"
	for allow in false true; do
		printf '%s\n' "tailscale:" "  hostname: ci" "  port: 8443" "  tailnet: $TAILNET" \
			"  socket: $RUN/nodes/ci/tailscaled.sock" "  allowSelfConnections: $allow" \
			"tls:" "  mode: \"off\"" "health:" "  port: 8091" "  bindAddress: 127.0.0.1" \
			"operator:" "  namespace: tka-self" "  leaderElection:" "    enabled: false" \
			"clusterInfo:" "  apiEndpoint: $APISERVER" >"$dir/config.yaml"
		spawn tka-self ci env KUBECONFIG="$K8S/admin.kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
			"$TKA_SERVER" serve --config "$dir/config.yaml"
		wait_for 60 "tka-self /ready" tka-self nsx ci curl -sf -m 2 http://127.0.0.1:8091/ready
		# From the server's own host, to its own node address.
		code=$(nsx ci curl -sS -m 5 "http://$ci_ip:8443/api/v1alpha1/whoami" 2>/dev/null | jq -r '.code // empty' || true)
		want=unknown_peer
		[[ $allow == true ]] && want=tagged_node_not_allowed
		if [[ $code == "$want" ]]; then pass "self (allowSelfConnections: $allow): a local process on the server's node gets $want"
		else fail "self (allowSelfConnections: $allow): a local process on the server's node gets $want" "got '$code'" "$LOGS/tka-self.log"; fi
		# Another node is identified as before (alice, no session on this server).
		code=$(nsx cli curl -sS -m 5 "http://$ci_ip:8443/api/v1alpha1/login" 2>/dev/null | jq -r '.code // empty' || true)
		if [[ $code == not_signed_in ]]; then pass "self (allowSelfConnections: $allow): alice's node is still identified"
		else fail "self (allowSelfConnections: $allow): alice's node is still identified" "got '$code'" "$LOGS/tka-self.log"; fi
		kill_tree "${PID[tka-self]}"
		mv "$LOGS/tka-self.log" "$LOGS/tka-self-$allow.log"
	done
}

scenario_role_change() {
	say "Scenario role change: the policy now grants alice edit; headscale reloads it on SIGHUP"
	write_policy edit
	note "policy: alice's grant on tag:tka is now {role: edit, period: 1h}; kill -HUP headscale"
	kill -HUP "${PID[headscale]}"
	local sock alice_ip deadline t0 role=
	sock=$(server_socket)
	alice_ip=$(ts alice ip -4)
	t0=$(now_ms) deadline=$((SECONDS + 30))
	# The new capability reaches the server's node with the next netmap; wait for it there rather than sleep.
	while ((SECONDS < deadline)); do
		role=$(curl -sS --unix-socket "$sock" "http://local-tailscaled.sock/localapi/v0/whois?addr=$alice_ip:1" |
			jq -r --arg c "$CAP" '.CapMap[$c][0].role // empty' 2>/dev/null || true)
		[[ $role == edit ]] && break
		sleep 0.2
	done
	if [[ $role == edit ]]; then pass "role-change: the server's node sees role edit" "$(($(now_ms) - t0)) ms after SIGHUP"
	else fail "role-change: the server's node sees role edit" "still '$role' after 30 s" "$LOGS/headscale.log"; return; fi
	tka_login alice
	if ((RC != 0)); then fail "role-change: tka login as alice" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	pass "role-change: tka login as alice"
	kubectl_as "$KC" create configmap e2e-role-change -n default --from-literal=k=v
	if ((RC == 0)); then pass "role-change: kubectl create configmap in default works with edit"
	else fail "role-change: kubectl create configmap in default works with edit" "$OUT"; return; fi
	tka_as alice logout --quiet
}

scenario_timing() {
	say "Scenario timing: 20 sequential logins, 10 revocations of unused tokens"
	local DEMO=0 # 30 logins and logouts are too many to show
	local i t0 walls=() lats=() lo lat token saved=$RUN/users/alice/saved.kubeconfig
	for i in $(seq 20); do
		t0=$(now_ms)
		tka_login alice
		walls+=($(($(now_ms) - t0)))
		if ((RC != 0)); then fail "timing: 20 sequential logins" "login $i: exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	done
	RESULT_LOGIN_P50=$(percentile 50 "${walls[@]}") RESULT_LOGIN_P99=$(percentile 99 "${walls[@]}")
	pass "timing: 20 sequential logins" "p50 $RESULT_LOGIN_P50 ms, p99 $RESULT_LOGIN_P99 ms"
	tka_as alice logout --quiet
	# Each round: a new session whose token is never used before logout, so the apiserver has no cached
	# authentication for it; curl (not kubectl) polls, so the poll period is not kubectl's start-up time.
	for i in $(seq 10); do
		tka_login alice
		if ((RC != 0)); then fail "timing: revocation of an unused token" "login: exit $RC: $ERR"; return; fi
		token=$(token_of "$KC")
		read -r lo _ lat <<<"$(revoke_and_poll alice "$token" 15000 curl "")"
		if ((lo != 0 || lat < 0)); then fail "timing: revocation of an unused token" "round $i: logout exit $lo, 401 after $lat ms"; return; fi
		lats+=("$lat")
	done
	RESULT_REVOKE_P50=$(percentile 50 "${lats[@]}") RESULT_REVOKE_P99=$(percentile 99 "${lats[@]}")
	pass "timing: 10 revocations of unused tokens" "p50 $RESULT_REVOKE_P50 ms, p99 $RESULT_REVOKE_P99 ms after logout"
	echo "login wall times (ms): ${walls[*]}" >>"$LOGS/steps.log"
	echo "revocation latencies (ms): ${lats[*]}" >>"$LOGS/steps.log"
}

scenario_faults() {
	say "Scenario faults: the server's tailscaled dies; tka-server restarts it"
	local ts_pid new_pid t0 saw503=0 deadline code t_ready
	ts_pid=$(ps -o pid=,comm= --ppid "${PID[tka-server]}" | awk '$2 == "tailscaled" { print $1; exit }')
	if [[ -z $ts_pid ]]; then fail "faults: find the supervised tailscaled" "no tailscaled child of tka-server (${PID[tka-server]})"; return; fi
	note "killing tailscaled (pid $ts_pid), the child of tka-server (pid ${PID[tka-server]})"
	t0=$(now_ms)
	kill -KILL "$ts_pid"
	deadline=$((SECONDS + 60))
	while ((SECONDS < deadline)); do
		code=$(ready_code)
		if [[ $code == 503 ]]; then saw503=1; fi
		if ((saw503)) && [[ $code == 200 ]]; then break; fi
		sleep 0.1
	done
	t_ready=$(($(now_ms) - t0))
	if ((saw503)); then pass "faults: /ready goes 503 after tailscaled died"
	else fail "faults: /ready goes 503 after tailscaled died" "never saw 503 (last $code)" "$LOGS/tka-server.log"; return; fi
	note "/ready answered 503 while the node was down, 200 once tka-server had restarted it and it was Running"
	if [[ $code == 200 ]]; then pass "faults: /ready is 200 again" "$t_ready ms after the kill"
	else fail "faults: /ready is 200 again" "last $code after 60 s" "$LOGS/tka-server.log"; return; fi
	check_tailnet_running faults
	new_pid=$(ps -o pid=,comm= --ppid "${PID[tka-server]}" | awk '$2 == "tailscaled" { print $1; exit }')
	if [[ -n $new_pid && $new_pid != "$ts_pid" ]]; then pass "faults: tka-server restarted tailscaled" "pid $ts_pid → $new_pid"
	else fail "faults: tka-server restarted tailscaled" "child now '${new_pid}'"; return; fi
	# The client's WireGuard session with the killed daemon is stale; until it notices and shakes hands
	# again, connections can hang (observed 0-10 s; tka's connect timeout then retries).
	note "alice's node still has a WireGuard session with the killed daemon; the first connection may wait for a new handshake"
	deadline=$((SECONDS + 30))
	t0=$(now_ms)
	while :; do
		tka_login alice
		if ((RC == 0 || SECONDS >= deadline)); then break; fi
		sleep 0.5
	done
	if ((RC == 0)); then pass "faults: login works after the restart" "$(($(now_ms) - t0)) ms after /ready"; RESULT_FAULT_READY=$t_ready
	else fail "faults: login works after the restart" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	tka_as alice logout --quiet
}

# Restart: a session outlives the server process; its expiry is kept in the cluster.
scenario_restart() {
	say "Scenario restart: tka-server is stopped and started again; alice's session survives"
	local until_before until_after pid t0 deadline
	tka_login alice
	if ((RC != 0)); then fail "restart: tka login as alice" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	until_before=$(signin_until alice)
	pid=${PID[tka-server]}
	note "SIGTERM to tka-server (pid $pid): it stops its tailscaled and exits"
	t0=$(now_ms)
	kill -TERM "$pid"
	deadline=$((SECONDS + 20))
	while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
	if running "$pid"; then fail "restart: tka-server exits on SIGTERM" "still running after 20 s" "$LOGS/tka-server.log"; return; fi
	if [[ -n $(ip netns pids "$(ns srv)" | while read -r p; do [[ $(cat "/proc/$p/comm" 2>/dev/null) == tailscaled ]] && echo "$p"; done) ]]; then
		fail "restart: tka-server exits on SIGTERM" "its tailscaled is still running"; return
	fi
	pass "restart: tka-server exits on SIGTERM, with its tailscaled" "$(($(now_ms) - t0)) ms"
	mv "$LOGS/tka-server.log" "$LOGS/tka-server.1.log"
	t0=$(now_ms)
	launch_tka_server
	wait_first_ready restart
	check_first_ready restart
	wait_for 120 "tka-server /ready (reason ok) after the restart" tka-server ready_ok
	RESULT_RESTART_READY=$(($(now_ms) - t0))
	pass "restart: tka-server ready again (reason ok)" "$RESULT_RESTART_READY ms after the start"
	kubectl_as "$KC" auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)); then pass "restart: alice's kubeconfig still works"
	else fail "restart: alice's kubeconfig still works" "$OUT"; return; fi
	until_after=$(signin_until alice)
	if [[ -n $until_before && $until_after == "$until_before" ]]; then pass "restart: the session's expiry is unchanged" "$until_after"
	else fail "restart: the session's expiry is unchanged" "before '$until_before', after '$until_after'"; return; fi
	# As after the fault: the first connection may wait for a new WireGuard handshake (tka retries).
	tka_as alice get login
	if ((RC == 0)) && grep -q alice <<<"$OUT$ERR"; then pass "restart: tka get login shows the session"
	else fail "restart: tka get login shows the session" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	tka_as alice logout --quiet
	if ((RC == 0)); then pass "restart: tka logout"; else fail "restart: tka logout" "exit $RC: $ERR"; fi
}
# subject_key LOGIN: tka's subject key: sanitize(login) cut to 22 characters,
# "-", the first 26 characters of lowercase unpadded base32 of SHA-256(login). Enough for the ASCII logins used here.
subject_key() {
	local s h
	s=$(tr 'A-Z' 'a-z' <<<"$1" | sed -e 's/[^a-z0-9]\{1,\}/-/g' -e 's/^-*//' -e 's/-*$//' | cut -c1-22 | sed 's/-*$//')
	h=$(printf '%s' "$1" | openssl dgst -sha256 -binary | base32 -w0 | tr -d '=' | tr 'A-Z' 'a-z' | cut -c1-26)
	printf '%s-%s\n' "${s:-user}" "$h"
}
# Footprint: resident memory of tka-server idle and with 1,000 live sessions. The sessions
# are TkaSignins created by the admin (1,000 tailnet identities are not available here); the controller
# provisions each (ServiceAccount, binding, Secret) and the server caches them all, as for real logins.
rss_kib() { awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"; }
controller_metric() { nsx srv curl -s -m 2 http://127.0.0.1:8080/metrics/controller | awk -v m="$1" '$1 ~ "^"m { s += $2 } END { print s + 0 }'; }
scenario_footprint() {
	say "Footprint: tka-server's memory idle and with 1,000 sessions"
	local pid=${PID[tka-server]} n=1000 t0 ts_pid now
	ts_pid=$(replica_tailscaled tka-server)
	sleep 2
	RESULT_RSS_IDLE=$(($(rss_kib "$pid") / 1024))
	pass "footprint: idle RSS measured" "tka-server ${RESULT_RSS_IDLE} MiB, its tailscaled $(($(rss_kib "$ts_pid") / 1024)) MiB"
	now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
	# The controller ends sessions whose subject key is not the one tka computes for their user name.
	local i keys=$RUN/footprint-keys.txt
	for ((i = 0; i < n; i++)); do subject_key "load$i@example.com"; done >"$keys"
	jq -n --argjson n "$n" --arg now "$now" --rawfile keys "$keys" '($keys | split("\n")) as $uks |
		{apiVersion: "v1", kind: "List", items: [range($n) | tostring as $i |
		$uks[$i | tonumber] as $uk | {
		apiVersion: "tka.specht-labs.de/v1alpha1", kind: "TkaSignin",
		metadata: {name: ("tka-" + $uk + "-abcdef"), namespace: "tka-system", labels: {"e2e-footprint": "1"}},
		spec: {username: ("load" + $i + "@example.com"), role: "view", validity_period: "1h", subject_key: $uk,
			node: "load.tailnet.test", node_id: ("nload" + $i), node_ip: "", requested_at: $now}}]}' >"$RUN/footprint.json"
	t0=$(now_ms)
	admin_kubectl create -f "$RUN/footprint.json" >"$LOGS/footprint-create.log" 2>&1 ||
		{ fail "footprint: create $n TkaSignins" "kubectl create failed" "$LOGS/footprint-create.log"; return; }
	local deadline=$((SECONDS + 300)) live=0
	while ((SECONDS < deadline)); do
		live=$(controller_metric tka_active_user_sessions)
		((live >= n)) && [[ $(controller_metric tka_controller_queue_depth) == 0 ]] && break
		sleep 1
	done
	if ((live < n)); then fail "footprint: $n sessions provisioned" "only $live live after 300 s" "$LOGS/tka-server.log"; return; fi
	RESULT_PROVISION_1000=$(($(now_ms) - t0))
	pass "footprint: $n sessions provisioned by the controller" "$RESULT_PROVISION_1000 ms"
	sleep 2
	RESULT_RSS_1000=$(($(rss_kib "$pid") / 1024))
	pass "footprint: RSS with $n live sessions measured" "${RESULT_RSS_1000} MiB"
	t0=$(now_ms)
	admin_kubectl delete tkasignins -n tka-system -l e2e-footprint=1 --wait=false >/dev/null 2>&1
	deadline=$((SECONDS + 300))
	while ((SECONDS < deadline)) && [[ -n $(admin_kubectl get tkasignins -n tka-system -l e2e-footprint=1 -o name 2>/dev/null) ]]; do
		sleep 1
	done
	if [[ -z $(admin_kubectl get serviceaccounts -n tka-system -o name | grep load || true) ]]; then
		pass "footprint: $n sessions cleaned up (objects gone)" "$(($(now_ms) - t0)) ms"
	else fail "footprint: $n sessions cleaned up" "ServiceAccounts left"; fi
}

# Two replicas: two tka-servers share the state volume and contend for the
# Lease; only the leader runs the tailnet node. A crashed leader (SIGKILL) is replaced within leaseDuration + 5 s
# by the standby, on the same tailnet node (state reused, same address), and alice's session survives; a
# SIGTERMed leader finishes in-flight requests, exits 0 and releases the Lease, so the standby takes over at once.
# A sampler checks both replicas' tka_leader every 100 ms: never two leaders.
HA_LEASE=6
# replica-a reaches the apiserver through a proxy the freeze phase stops (tests/e2e/freeze_proxy.py).
PROXY_PORT=6444
launch_replica() { # NAME HEALTH_PORT
	local run_as=() kubeconfig=$TKAD/kubeconfig
	if ((SERVER_UID != 0)); then run_as=(setpriv --reuid "$SERVER_UID" --regid "$SERVER_UID" --clear-groups); fi
	if [[ $1 == replica-a ]]; then kubeconfig=$TKAD/kubeconfig-proxied; fi
	spawn "$1" srv "${run_as[@]}" env HOME="$TKAD" TS_AUTHKEY="$SERVER_KEY" TS_DEBUG_USE_DERP_HTTP=1 POD_NAME="$1" \
		KUBECONFIG="$kubeconfig" RUST_LOG="${RUST_LOG:-info}" "$TKA_SERVER" serve --config "$TKAD/config-ha.yaml" \
		--health-port "$2"
}
start_freeze_proxy() {
	sed "s|server: $APISERVER|server: https://127.0.0.1:$PROXY_PORT|" "$TKAD/kubeconfig" >"$TKAD/kubeconfig-proxied"
	grep -q "127.0.0.1:$PROXY_PORT" "$TKAD/kubeconfig-proxied" || die "kubeconfig-proxied: no server line to rewrite"
	chmod --reference="$TKAD/kubeconfig" "$TKAD/kubeconfig-proxied"
	chown --reference="$TKAD/kubeconfig" "$TKAD/kubeconfig-proxied"
	spawn freeze-proxy srv python3 "$REPO/tests/e2e/freeze_proxy.py" "$PROXY_PORT" "${IP[srv]}" 6443
	wait_for 10 "the apiserver proxy" freeze-proxy nsx srv curl -sk -o /dev/null "https://127.0.0.1:$PROXY_PORT/healthz"
}
replica_ready() { # HEALTH_PORT ROLE REASON
	nsx srv curl -sf -m 2 "http://127.0.0.1:$1/ready" | jq -e --arg r "$2" --arg why "$3" '.role == $r and .reason == $why'
}
replica_tailscaled() { # NAME: the pid of the replica's tailscaled, if any
	ps -o pid=,comm= --ppid "${PID[$1]}" 2>/dev/null | awk '$2 == "tailscaled" { print $1; exit }'
}
tailscaled_in_srv() {
	ip netns pids "$(ns srv)" | while read -r p; do [[ $(cat "/proc/$p/comm" 2>/dev/null) == tailscaled ]] && echo "$p"; done
}
scenario_replicas() {
	say "Scenario replicas: two tka-servers, one Lease; the leader crashes, then the next one is stopped"
	local ip_before ip_after t0 took pid ts_pid deadline code sampler bad nodes
	sed -e 's/^operator:$/operator:\n  leaderElection:\n    enabled: true\n    leaseDuration: '"$HA_LEASE"'s\n    renewDeadline: 4s\n    retryPeriod: 500ms/' \
		"$TKAD/config.yaml" >"$TKAD/config-ha.yaml"
	ip_before=$(peer_ip alice tka)
	kill_tree "${PID[tka-server]}"
	start_freeze_proxy
	launch_replica replica-a 8080
	wait_for 120 "replica-a leads (reason ok)" replica-a replica_ready 8080 leader ok
	launch_replica replica-b 8081
	wait_for 60 "replica-b is a ready standby" replica-b replica_ready 8081 standby standby
	pass "replicas: one leader, one ready standby (reason standby)"
	DOCTOR_CONFIG=$TKAD/config-ha.yaml DOCTOR_PORT=8081 server_doctor
	if ((RC == 0)) && has_line '^✓ leader +held by replica-a_[0-9a-f]+, renewed' && has_line '^✓ ready +/ready 200 \(standby' &&
		has_line '^- tailscaled +standby'; then pass "replicas: tka-server doctor on the standby shows the Lease holder" "$(grep '^✓ leader' <<<"$OUT")"
	else fail "replicas: tka-server doctor on the standby shows the Lease holder" "exit $RC: $OUT"; fi
	if [[ -z $(replica_tailscaled replica-b) ]]; then pass "replicas: the standby runs no tailnet node"
	else fail "replicas: the standby runs no tailnet node" "replica-b has a tailscaled child"; fi
	( while :; do
		printf '%s %s %s\n' "$(now_ms)" \
			"$(nsx srv curl -s -m 1 http://127.0.0.1:8080/metrics | awk '$1 == "tka_leader" { print $2 }')" \
			"$(nsx srv curl -s -m 1 http://127.0.0.1:8081/metrics | awk '$1 == "tka_leader" { print $2 }')"
		sleep 0.1
	done ) >"$LOGS/leader-samples.log" 2>/dev/null &
	sampler=$!
	tka_login alice
	if ((RC != 0)); then fail "replicas: tka login through the leader" "exit $RC: $ERR" "$LOGS/replica-a.log"; kill "$sampler"; return; fi
	local kc=$KC until_before
	until_before=$(signin_until alice)

	pid=${PID[replica-a]} ts_pid=$(replica_tailscaled replica-a)
	note "SIGKILL to the leader (pid $pid), as a crashed pod; its tailscaled (pid $ts_pid) must not outlive it"
	t0=$(now_ms)
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || true # reaps it (and keeps bash's "Killed" notice out of the output)
	deadline=$((SECONDS + 5))
	while running "$ts_pid" && ((SECONDS < deadline)); do sleep 0.05; done
	if ! running "$ts_pid"; then pass "replicas: the crashed leader's tailscaled died with it (no orphan holding the node)" "$(($(now_ms) - t0)) ms"
	else fail "replicas: the crashed leader's tailscaled died with it" "pid $ts_pid still running"; fi
	wait_for $((HA_LEASE + 30)) "replica-b takes over" replica-b replica_ready 8081 leader ok
	took=$(($(now_ms) - t0))
	RESULT_TAKEOVER=$took
	if ((took <= (HA_LEASE + 5) * 1000)); then pass "replicas: the standby leads within leaseDuration + 5 s" "$took ms (lease ${HA_LEASE}s)"
	else fail "replicas: the standby leads within leaseDuration + 5 s" "$took ms" "$LOGS/replica-b.log"; fi
	nodes=$(hs nodes list -o json | jq '[.[] | select((.given_name // .givenName // .name // "") | startswith("tka"))] | length')
	ip_after=$(peer_ip alice tka || true)
	if [[ $nodes == 1 && $ip_after == "$ip_before" ]]; then pass "replicas: same tailnet node after the takeover (state reused)" "$ip_after"
	else fail "replicas: same tailnet node after the takeover" "tka nodes: $nodes, address $ip_before → $ip_after"; fi
	kubectl_as "$kc" auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $(signin_until alice) == "$until_before" ]]; then pass "replicas: alice's session and token survive the takeover"
	else fail "replicas: alice's session and token survive the takeover" "$OUT; until '$until_before' → '$(signin_until alice)'"; fi
	deadline=$((SECONDS + 30))
	while :; do tka_as alice get login; ((RC == 0 || SECONDS >= deadline)) && break; sleep 0.5; done
	if ((RC == 0)); then pass "replicas: the new leader serves alice"
	else fail "replicas: the new leader serves alice" "exit $RC: $ERR" "$LOGS/replica-b.log"; fi

	# Graceful: replica-a comes back as standby; replica-b gets SIGTERM while alice keeps logging in.
	mv "$LOGS/replica-a.log" "$LOGS/replica-a.1.log"
	launch_replica replica-a 8080
	wait_for 60 "replica-a is a ready standby" replica-a replica_ready 8080 standby standby
	nsx cli bash -c 'for i in $(seq 60); do curl -s -o /dev/null -m 5 -X POST --cacert "$1" "$2/api/v1alpha1/login?wait=10s"; echo $?; sleep 0.05; done' \
		_ "$PKI/ca.crt" "$TKA_URL" >"$LOGS/graceful-curl.log" 2>&1 &
	local load=$!
	sleep 1
	pid=${PID[replica-b]}
	t0=$(now_ms)
	kill -TERM "$pid"
	deadline=$((SECONDS + 30))
	while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
	wait "$pid" 2>/dev/null; code=$?
	took=$(($(now_ms) - t0))
	if ((code == 0)); then pass "replicas: SIGTERM: the leader exits 0" "$took ms"
	else fail "replicas: SIGTERM: the leader exits 0" "exit $code after $took ms" "$LOGS/replica-b.log"; fi
	wait_for 30 "replica-a takes over" replica-a replica_ready 8080 leader ok
	took=$(($(now_ms) - t0))
	if ((took < HA_LEASE * 1000)); then pass "replicas: SIGTERM released the Lease: the standby leads before it would expire" "$took ms (lease ${HA_LEASE}s)"
	else fail "replicas: SIGTERM released the Lease" "standby led after $took ms" "$LOGS/replica-a.log"; fi
	wait "$load"
	# curl 18/52/56: a request accepted and then cut off or dropped. 7/28: not accepted (listener closed, node
	# gone while alice's node still talks to the old WireGuard session).
	bad=$(grep -cE '^(18|52|56)$' "$LOGS/graceful-curl.log" || true)
	if ((bad == 0)); then pass "replicas: no request was dropped mid-way during the shutdown" "$(sort "$LOGS/graceful-curl.log" | uniq -c | tr -s ' \n' ' ')"
	else fail "replicas: no request was dropped mid-way during the shutdown" "$bad of 60 cut off" "$LOGS/graceful-curl.log"; fi
	kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
	bad=$(awk '$2 == 1 && $3 == 1' "$LOGS/leader-samples.log" | wc -l)
	if ((bad == 0)); then pass "replicas: never two leaders" "$(wc -l <"$LOGS/leader-samples.log") samples of both replicas"
	else fail "replicas: never two leaders" "$bad samples with both tka_leader 1" "$LOGS/leader-samples.log"; fi
	if [[ $(tailscaled_in_srv | wc -l) == 1 ]]; then pass "replicas: one tailscaled on the server machine"
	else fail "replicas: one tailscaled on the server machine" "$(tailscaled_in_srv | tr '\n' ' ')"; fi
	# The session lived through two leaders: its logout is cleaned up exactly once.
	local uid revoked
	uid=$(admin_kubectl get tkasignins -n tka-system -o json | jq -r '[.items[] | select(.spec.username == "alice")][0].metadata.uid')
	deadline=$((SECONDS + 30))
	while :; do tka_as alice logout --quiet; ((RC == 0 || SECONDS >= deadline)) && break; sleep 0.5; done
	sleep 2
	revoked=$(admin_kubectl get events.v1.events.k8s.io -n tka-system -o json | jq --arg uid "$uid" \
		'[.items[] | select(.regarding.uid == $uid and .reason == "Revoked") | (.series.count // 1)] | add // 0')
	if ((RC == 0)) && [[ $revoked == 1 ]]; then pass "replicas: logout after two takeovers: the session is cleaned up once" "1 Revoked event"
	else fail "replicas: logout after two takeovers: the session is cleaned up once" "logout exit $RC, $revoked Revoked events for $uid"; fi
}
# Issue 12, leader safety: replica-a leads and its apiserver connection freezes (its proxy gets SIGSTOP: nothing
# is delivered, connections stay open, and the kube client's own timeouts are minutes long). It must notice on
# its own clock, kill its tailscaled and exit non-zero within renewDeadline (4 s), before replica-b may take
# over (leaseDuration, 6 s, after replica-b last saw the Lease change). Sampled all along: never two tailscaleds
# on the server machine, never two replicas reporting tka_leader 1; the Lease changes hands once, and replica-a
# never writes it again.
scenario_frozen_leader() {
	say "Scenario frozen leader: the leader's apiserver connection freezes; it steps down before the standby takes over"
	local t0 code took pid bad holders sampler lease_watch deadline
	if ! replica_ready 8080 leader ok; then fail "frozen leader: replica-a leads" "replica-a is not the leader" "$LOGS/replica-a.log"; return; fi
	mv "$LOGS/replica-b.log" "$LOGS/replica-b.1.log"
	launch_replica replica-b 8081
	wait_for 60 "replica-b is a ready standby" replica-b replica_ready 8081 standby standby
	( while :; do
		printf '%s %s %s %s\n' "$(now_ms)" "$(tailscaled_in_srv | wc -l)" \
			"$(nsx srv curl -s -m 1 http://127.0.0.1:8080/metrics | awk '$1 == "tka_leader" { print $2 }')" \
			"$(nsx srv curl -s -m 1 http://127.0.0.1:8081/metrics | awk '$1 == "tka_leader" { print $2 }')"
		sleep 0.02
	done ) >"$LOGS/frozen-samples.log" 2>/dev/null &
	sampler=$!
	admin_kubectl get lease -n tka-system controller.tka.specht-labs.de -w \
		-o jsonpath='{.spec.holderIdentity}{"\n"}' >"$LOGS/frozen-lease.log" 2>&1 &
	lease_watch=$!
	sleep 2
	pid=${PID[replica-a]}
	note "SIGSTOP to replica-a's apiserver proxy (pid ${PID[freeze-proxy]}); replica-a (pid $pid) must step down on its own"
	t0=$(now_ms)
	kill -STOP "${PID[freeze-proxy]}"
	deadline=$((SECONDS + 20))
	while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
	took=$(($(now_ms) - t0))
	if running "$pid"; then code=running; else wait "$pid" 2>/dev/null && code=0 || code=$?; fi
	if [[ $code != running && $code != 0 ]] && ((took <= 6000)); then
		pass "frozen leader: replica-a gave up on its own and exited non-zero" "$took ms after the freeze (renewDeadline 4 s), exit $code"
	else fail "frozen leader: replica-a gave up on its own and exited non-zero" "exit $code after $took ms" "$LOGS/replica-a.log"; fi
	if grep -q "leadership lost" "$LOGS/replica-a.log" && grep -q "stopped the tailnet node" "$LOGS/replica-a.log"; then
		pass "frozen leader: replica-a logged the loss and stopped its tailnet node first"
	else fail "frozen leader: replica-a logged the loss and stopped its tailnet node first" "no such log lines" "$LOGS/replica-a.log"; fi
	wait_for 30 "replica-b takes over" replica-b replica_ready 8081 leader ok
	pass "frozen leader: replica-b leads" "$(($(now_ms) - t0)) ms after the freeze"
	sleep 1
	kill "$sampler" "$lease_watch" 2>/dev/null; wait "$sampler" "$lease_watch" 2>/dev/null || true
	kill -KILL "${PID[freeze-proxy]}" 2>/dev/null; wait "${PID[freeze-proxy]}" 2>/dev/null || true
	bad=$(awk '$2 > 1' "$LOGS/frozen-samples.log" | wc -l)
	if ((bad == 0)); then pass "frozen leader: never two tailscaleds on the server machine" "$(wc -l <"$LOGS/frozen-samples.log") samples"
	else fail "frozen leader: never two tailscaleds on the server machine" "$bad samples with two" "$LOGS/frozen-samples.log"; fi
	bad=$(awk '$3 == 1 && $4 == 1' "$LOGS/frozen-samples.log" | wc -l)
	if ((bad == 0)); then pass "frozen leader: never two replicas report tka_leader 1"
	else fail "frozen leader: never two replicas report tka_leader 1" "$bad samples" "$LOGS/frozen-samples.log"; fi
	holders=$(grep -v '^$' "$LOGS/frozen-lease.log" | sed 's/_[0-9a-f]*$//' | uniq | tr '\n' ' ' || true)
	if [[ $holders == "replica-a replica-b " ]]; then pass "frozen leader: the Lease changed hands once; replica-a never wrote it again" "$(grep -c . "$LOGS/frozen-lease.log") Lease versions"
	else fail "frozen leader: the Lease changed hands once" "holders in order: $holders" "$LOGS/frozen-lease.log"; fi
	deadline=$((SECONDS + 30))
	while :; do tka_login alice; ((RC == 0 || SECONDS >= deadline)) && break; sleep 0.5; done
	if ((RC == 0)); then pass "frozen leader: alice logs in through the new leader"
	else fail "frozen leader: alice logs in through the new leader" "exit $RC: $ERR" "$LOGS/replica-b.log"; fi
	tka_as alice logout --quiet
}
# check_tailnet_running SCENARIO: right after /ready turned 200, the server's tailscaled must be Running.
check_tailnet_running() {
	local state
	state=$(curl -sS --unix-socket "$(server_socket)" http://local-tailscaled.sock/localapi/v0/status 2>/dev/null |
		jq -r .BackendState 2>/dev/null || true)
	if [[ $state == Running ]]; then pass "$1: /ready 200 means the server's node is Running"
	else fail "$1: /ready 200 means the server's node is Running" "BackendState '$state'" "$LOGS/tka-server.log"; fi
}
# signin_until USER: valid_until of USER's TkaSignin.
signin_until() {
	admin_kubectl get tkasignins -n tka-system -o json |
		jq -r --arg u "$1" '[.items[] | select(.spec.username == $u)][0].status.valid_until // empty'
}

write_results() {
	{
		echo "# tka e2e results ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg))"
		echo
		echo "Wall times include starting the process inside the namespace (\`ip netns exec\`, ~10 ms)."
		echo
		echo "| Measurement | Value |"
		echo "|---|---|"
		echo "| \`tka login --quiet\` wall time, 20 sequential, p50 / p99 | ${RESULT_LOGIN_P50:--} / ${RESULT_LOGIN_P99:--} ms |"
		echo "| logout → 401, token unused for 10 s, 10 rounds, p50 / p99 | ${RESULT_REVOKE_P50:--} / ${RESULT_REVOKE_P99:--} ms |"
		echo "| logout → 401, token used just before logout (apiserver 10 s cache) | ${RESULT_USED_REVOCATION:--} ms |"
		echo "| login wall time on dave's node, 10 each alternating: \`tka login --quiet\` p50 / max | ${RESULT_DAVE_LOGIN_P50:--} / ${RESULT_DAVE_LOGIN_MAX:--} ms |"
		echo "| the same: upstream \`ts-k8s-auth login -q\` (POST, then polls /kubeconfig) p50 / max | ${RESULT_UPSTREAM_LOGIN_P50:--} / ${RESULT_UPSTREAM_LOGIN_MAX:--} ms |"
		echo "| supervised tailscaled killed → /ready 200 again | ${RESULT_FAULT_READY:--} ms |"
		echo "| tka-server restarted → /ready 200 with reason ok | ${RESULT_RESTART_READY:--} ms |"
		echo "| tka-server RSS idle / with 1,000 live sessions | ${RESULT_RSS_IDLE:--} / ${RESULT_RSS_1000:--} MiB |"
		echo "| 1,000 TkaSignins created → all provisioned | ${RESULT_PROVISION_1000:--} ms |"
		echo "| leader SIGKILLed → standby ready as leader (lease ${HA_LEASE}s) | ${RESULT_TAKEOVER:--} ms |"
		echo "| exec token's exp → apiserver answers 401 (its leeway + cache) | ${RESULT_EXPIRY_LAG:--} s |"
		echo
		echo "Checks: $PASSED passed, $FAILED failed."
	} >"$RUN/results.md"
	if ((DEMO)) || [[ -n ${RESULT_LOGIN_P50:-} ]]; then
		echo
		grep '^|' "$RUN/results.md"
		echo "(${RUN#"$REPO"/}/results.md)"
	fi
}

# ---------------------------------------------------------------------------------------------------- main
preflight() {
	[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
	local t
	# Install what a fresh Debian machine lacks (tool:package), then insist.
	local missing=()
	for tp in ip:iproute2 jq:jq curl:curl openssl:openssl setpriv:util-linux setsid:util-linux ps:procps sysctl:procps; do
		command -v "${tp%%:*}" >/dev/null || missing+=("${tp#*:}")
	done
	if ((${#missing[@]})) && command -v apt-get >/dev/null; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	for t in ip jq curl openssl setpriv setsid ps base64 sysctl; do command -v "$t" >/dev/null || die "missing tool: $t"; done
	[[ -c /dev/net/tun ]] || die "/dev/net/tun is missing: the client nodes need a TUN device"
}

main() {
	preflight
	mkdir -p "$E2E_ROOT"
	exec 9>"$E2E_ROOT/.lock"
	# Waits a little: a killed run's last foreground child may still hold the lock for a moment.
	flock -w 30 9 || die "another tests/e2e/run.sh is running"
	if [[ $MODE == down ]]; then
		cleanup_leftovers
		RUN=/nonexistent verify_clean && echo "torn down"
		return
	fi
	cleanup_leftovers
	prune_old_runs

	phase "peer binaries (tests/peers/build.sh; cached after the first build)"
	"$REPO/tests/peers/build.sh" >/dev/null
	if ((BUILD)) && ((!ENV_ONLY)); then
		phase "cargo build --bins"
		(cd "$REPO" && cargo build --bins --quiet) || die "cargo build failed"
	fi

	exec 7>&1 8>&2 # the original stdout and stderr, for the EXIT trap
	RUN=$E2E_ROOT/$(date +%Y%m%d-%H%M%S)
	while [[ -e $RUN ]]; do RUN+=-1; done # two runs within a second
	LOGS=$RUN/logs PKI=$RUN/pki HS=$RUN/headscale K8S=$RUN/k8s TKAD=$RUN/tka-server
	mkdir -p "$LOGS"
	: >"$RUN/pids"
	ln -sfn "$(basename "$RUN")" "$E2E_ROOT/latest"
	trap on_exit EXIT
	trap 'exit 130' INT TERM
	phase "run directory ${RUN#"$REPO"/}"

	setup_network
	make_pki
	start_headscale
	start_controlplane
	start_clients
	if ((ENV_ONLY)); then
		start_standin_server_node
		check_environment
		finish
	fi
	install_tka
	start_tka_server
	if ((SOAK)); then
		soak
		finish
	fi
	check_environment
	check_first_ready startup
	if ((FEDERATION)); then
		make_member_pki
		start_member_controlplane
		start_member_server
		scenario_login
		scenario_federation
		finish
	fi
	expiry_begin
	scenario_login
	scenario_magicdns
	scenario_exec
	scenario_forbidden
	scenario_tagged
	scenario_self
	scenario_doctor
	scenario_role_change
	scenario_timing
	scenario_upstream
	scenario_faults
	scenario_restart
	scenario_footprint
	scenario_replicas
	scenario_frozen_leader
	scenario_expiry
	finish
}

if ((FEDERATION)); then
	# shellcheck source=tests/e2e/federation.sh
	source "$REPO/tests/e2e/federation.sh"
fi
# shellcheck source=tests/e2e/upstream.sh
source "$REPO/tests/e2e/upstream.sh"
if ((SOAK)); then
	# shellcheck source=tests/soak/soak.sh
	source "$REPO/tests/soak/soak.sh"
fi
main
