# shellcheck shell=bash
# The chaos soak (`tests/soak/run.sh`, which runs `tests/e2e/run.sh --soak`): sourced by run.sh after its own
# functions, so the definitions here that share a name (write_policy, start_clients, write_results) replace
# run.sh's, as tests/e2e/federation.sh does. The set-up is the end-to-end test's: real headscale, tailscaled,
# etcd, kube-apiserver and tka-server in network namespaces, here $NS_PREFIX-* on 10.78.0.0/24.
#
# Users, each with its own node (a TUN tailscaled) and a grant on the tka node:
#   alice view · bob edit · carol view (priority 1) and edit (priority 0): every other pair of cycles asks
#   for edit with --role · dave edit in namespace soak-a only (RoleBindings) — these four run logout cycles:
#   login (-o json), the login's kubeconfig checked, `tka kubeconfig` checked, logout; token and exec
#   kubeconfigs alternate.
#   erin view: expiry cycles. After the check, the soak (as cluster admin) moves the session's start back so
#   that its 10-minute minimum period ends 3-8 s later, and measures when the TkaSignin is gone: the
#   controller's own deadline handling does the rest, only the wait is shortened.
#   frank edit (TKA_SOAK_REAL_EXPIRY=1, the long form): sessions that run to their real 10-minute end.
# Every kubeconfig is checked with kubectl on the user's node (through `tka credential` for exec ones): a
# SelfSubjectReview must name this user's ServiceAccount (the same one every time, never another user's),
# and a SelfSubjectRulesReview in soak-a and soak-b must show exactly the rights of the expected role there.
#
# Meanwhile the chaos loop SIGKILLs, at random moments, tka-server (then started again), its tailscaled (its
# supervisor restarts it) and kube-apiserver (then started again; etcd keeps the state), each equally
# often, waiting for recovery after each. Failures a kill explains (server unreachable, 5xx) are retried;
# everything else is counted as a violation. Only processes this run started are killed (by recorded pid).
#
# At the end: no TkaSignin, user ServiceAccount, session Secret or tka binding is left; every expiry was
# gone within 5 s of valid_until (or of the recovery, when a kill overlapped it); no check ever saw the
# wrong user or role. Settings (environment; tests/soak/run.sh sets them from its flags):
#   TKA_SOAK_CYCLES  logout cycles in total, shared by alice, bob, carol and dave (default 100)
#   TKA_SOAK_KILLS   SIGKILLs in total (default cycles/25, at least 6)
#   TKA_SOAK_GAP     longest calm between a recovery and the next kill, seconds (default 20)
#   TKA_SOAK_REAL_EXPIRY=1  also frank's real 10-minute sessions

SOAK_CYCLES=${TKA_SOAK_CYCLES:-100}
SOAK_KILLS=${TKA_SOAK_KILLS:-$((SOAK_CYCLES / 25 > 6 ? SOAK_CYCLES / 25 : 6))}
SOAK_GAP=${TKA_SOAK_GAP:-20}
SOAK_REAL_EXPIRY=${TKA_SOAK_REAL_EXPIRY:-0}
# What a kill may explain; anything longer is a failure of recovery.
SOAK_RETRY_SECONDS=180
# The TokenRequest minimum, which the CRD enforces for every session.
SOAK_PERIOD_SECONDS=600

NS_PREFIX=${TKA_E2E_PREFIX:-tkasoak}
E2E_ROOT=$REPO/target/soak
LOGOUT_USERS=(alice bob carol dave)
EXPIRY_USERS=(erin)
if ((SOAK_REAL_EXPIRY)); then EXPIRY_USERS+=(frank); fi
SOAK_USERS=("${LOGOUT_USERS[@]}" "${EXPIRY_USERS[@]}")
NAMESPACES=(br ctl srv "${SOAK_USERS[@]}")
declare -A IP=([ctl]=10.78.0.1 [srv]=10.78.0.2 [alice]=10.78.0.11 [bob]=10.78.0.12 [carol]=10.78.0.13
	[dave]=10.78.0.14 [erin]=10.78.0.15 [frank]=10.78.0.16)
HEADSCALE_URL=http://${IP[ctl]}:8080
APISERVER=https://${IP[srv]}:6443
declare -A NODE_NS=()
for u in "${SOAK_USERS[@]}"; do NODE_NS[$u]=$u; done
# The role each user's sessions must have (carol's alternates) and, for namespaced grants, the namespace.
declare -A SOAK_ROLE=([alice]=view [bob]=edit [carol]=view [dave]=edit [erin]=view [frank]=edit)
declare -A SOAK_SCOPE=([dave]=soak-a)
SOAK_VICTIMS=(tka-server tailscaled kube-apiserver)
SOAK_SUMMARY=()

write_policy() {
	cat >"$HS/policy.json" <<EOF
{
  "tagOwners": { "tag:tka": ["alice@"] },
  "grants": [
    { "src": ["*"], "dst": ["*"], "ip": ["*"] },
    { "src": ["alice@"], "dst": ["tag:tka"], "app": { "$CAP": [ { "role": "view", "period": "1h" } ] } },
    { "src": ["bob@"], "dst": ["tag:tka"], "app": { "$CAP": [ { "role": "edit", "period": "1h" } ] } },
    { "src": ["carol@"], "dst": ["tag:tka"], "app": { "$CAP": [
      { "role": "view", "period": "1h", "priority": 1 }, { "role": "edit", "period": "1h" } ] } },
    { "src": ["dave@"], "dst": ["tag:tka"],
      "app": { "$CAP": [ { "role": "edit", "period": "1h", "namespaces": ["soak-a"] } ] } },
    { "src": ["erin@"], "dst": ["tag:tka"], "app": { "$CAP": [ { "role": "view", "period": "10m" } ] } },
    { "src": ["frank@"], "dst": ["tag:tka"], "app": { "$CAP": [ { "role": "edit", "period": "10m" } ] } }
  ]
}
EOF
}

start_clients() {
	phase "the soak users' nodes: ${SOAK_USERS[*]} (a TUN tailscaled each)"
	local u
	for u in "${SOAK_USERS[@]}"; do
		user_id "$u" >/dev/null 2>&1 || hs users create "$u" >/dev/null
		start_node "$u" "${NODE_NS[$u]}" "$(authkey "$u")"
	done
}

# ------------------------------------------------------------------------------------------------ helpers
# soak_log LINE...: one line of this worker's record (analysed at the end), the time (ms) as its last field.
soak_log() { printf '%s %s\n' "$*" "$(now_ms)" >>"$SOAK/$SOAK_ME.log"; }
violation() { soak_log "violation $SOAK_ME $*"; }
# rfc3339 MILLISECONDS: UTC, second precision, as Kubernetes writes times.
rfc3339() { date -u -d "@$(($1 / 1000))" +%Y-%m-%dT%H:%M:%SZ; }
epoch_ms() { echo $(($(date -d "$1" +%s) * 1000)); }

# soak_tka USER ARGS...: `tka ARGS` as USER, retried while the failure is one a kill explains (exit 5:
# unreachable, timeout, 5xx; exit 1: a connection cut mid-answer), for up to SOAK_RETRY_SECONDS. RC, OUT,
# ERR as tka_as; TRIES is the number of attempts.
soak_tka() {
	local user=$1 deadline=$((SECONDS + SOAK_RETRY_SECONDS))
	shift
	TRIES=0
	while :; do
		TRIES=$((TRIES + 1))
		tka_as "$user" "$@"
		if ((RC != 0)); then soak_log "attempt $user $1 exit $RC: $(head -n 1 <<<"$ERR" | cut -c1-160)"; fi
		if ((RC == 0)) || { ((RC != 5 && RC != 1)); } || ((SECONDS >= deadline)); then return; fi
		sleep 0.5
	done
}

# kubectl_user USER KUBECONFIG ARGS...: kubectl on USER's node with tka on PATH (exec kubeconfigs run
# `tka credential`); stdout in OUT, stderr in ERR, exit code in RC.
kubectl_user() {
	local user=$1 kc=$2 home=$RUN/users/$1
	shift 2
	RC=0
	OUT=$(nsx "${NODE_NS[$user]}" env -u KUBECONFIG -u XDG_RUNTIME_DIR HOME="$home" XDG_CONFIG_HOME="$home/.config" \
		XDG_CACHE_HOME="$home/.cache" PATH="$(dirname "$TKA"):$PATH" TKA_CLIENT_CAFILE="$PKI/ca.crt" \
		"$PEERS/kubectl" --kubeconfig "$kc" --request-timeout=20s "$@" 2>"$home/.kubectl.stderr") || RC=$?
	ERR=$(<"$home/.kubectl.stderr")
	printf '$ kubectl %s   # as %s, exit %s\n%s\n' "$*" "$user" "$RC" "$ERR" >>"$LOGS/steps.log"
}

# The class of rights a SelfSubjectRulesReview answer shows: edit (create deployments), view (get pods),
# none.
RULES_CLASS='[.status.resourceRules[]? | select(any(.apiGroups[]?; . == "apps" or . == "*"))
	| select(any(.resources[]?; . == "deployments" or . == "*")) | .verbs[]] as $d
	| [.status.resourceRules[]? | select(any(.apiGroups[]?; . == "" or . == "*"))
	| select(any(.resources[]?; . == "pods" or . == "*")) | .verbs[]] as $p
	| if any($d[]; . == "create" or . == "*") then "edit" elif any($p[]; . == "get" or . == "*") then "view" else "none" end'

# kubectl errors a kill explains: the apiserver down or restarting, the exec plugin unable to reach tka-server.
TRANSIENT='connection refused|connection reset|EOF|i/o timeout|Timeout|timed out|deadline exceeded|ServiceUnavailable|unable to handle the request|InternalError|TLS handshake|no route to host|exit code 5|etcdserver'

# apiserver_restarted_since MS: was kube-apiserver restarting (killed and not yet ready) at some moment since
# MS? A restarting apiserver serves requests before its RBAC authorizer has loaded the roles and answers 403 to
# what every authenticated user may do (seen: SelfSubjectReviews forbidden about a second before /readyz).
apiserver_restarted_since() {
	awk -v t0="$1" '$2 == "kube-apiserver" && $1 == "kill" { down = 1 }
		$2 == "kube-apiserver" && $1 == "up" { down = 0; if ($3 >= t0) hit = 1 }
		END { exit !(hit || down) }' "$SOAK/chaos.log" 2>/dev/null
}

# soak_kubectl USER KUBECONFIG UNTIL_MS ARGS...: kubectl_user, retried while a kill explains the failure.
# Returns 0 (answered), 2 (the session is over: rejected at or after UNTIL), 1 (recorded as a violation or
# a failure).
soak_kubectl() {
	local user=$1 kc=$2 until=$3 deadline=$((SECONDS + SOAK_RETRY_SECONDS)) t0
	shift 3
	while :; do
		t0=$(now_ms)
		kubectl_user "$user" "$kc" "$@"
		((RC == 0)) && return 0
		if grep -qE 'Unauthorized|not signed in|session (has )?ended' <<<"$ERR"; then
			if (($(now_ms) >= until)); then return 2; fi
			violation "rejected $((until - $(now_ms))) ms before the session's end ($*): $(head -c 300 <<<"$ERR")"
			return 1
		fi
		if ! grep -qE "$TRANSIENT" <<<"$ERR" && ! { grep -q 'is forbidden' <<<"$ERR" && apiserver_restarted_since "$t0"; }; then
			soak_log "failure $SOAK_ME kubectl $*: $(head -c 300 <<<"$ERR")"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			soak_log "failure $SOAK_ME kubectl $* kept failing for ${SOAK_RETRY_SECONDS}s: $(head -c 300 <<<"$ERR")"
			return 1
		fi
		soak_log "attempt $user kubectl exit $RC: $(tail -n 1 <<<"$ERR" | cut -c1-160)"
		sleep 0.5
	done
}

# check_access USER KUBECONFIG ROLE UNTIL_MS WHAT: the kubeconfig acts as USER's ServiceAccount with ROLE's
# rights (in SOAK_SCOPE's namespace only, if the user has one). One kubectl call creates a SelfSubjectReview
# and a SelfSubjectRulesReview for soak-a and for soak-b (the apiserver answers each as the token's subject).
# Returns as soak_kubectl.
check_access() {
	local user=$1 kc=$2 role=$3 until=$4 what=$5 name ns want got rc=0 i=1
	# --validate=false: client-side validation would list CRDs, which a user's token may not.
	soak_kubectl "$user" "$kc" "$until" create --validate=false -o json -f "$SOAK/reviews.yaml" || return $?
	# kubectl prints the three answers one after the other.
	OUT=$(jq -sc . <<<"$OUT")
	name=$(jq -r '.[0].status.userInfo.username' <<<"$OUT")
	if [[ $name != system:serviceaccount:tka-system:tka-user-$user-* ]]; then
		violation "$what: the token is $name, not one of $user's"
		rc=1
	elif [[ -z ${SOAK_SA:-} ]]; then
		SOAK_SA=$name
	elif [[ $name != "$SOAK_SA" ]]; then
		violation "$what: the token is $name, earlier ones were $SOAK_SA"
		rc=1
	fi
	for ns in soak-a soak-b; do
		want=$role
		if [[ -n ${SOAK_SCOPE[$user]:-} && ${SOAK_SCOPE[$user]} != "$ns" ]]; then want=none; fi
		# The answer does not repeat the namespace; kubectl keeps the file's order (soak-a, then soak-b).
		got=$(jq -r ".[$i] | if .kind == \"SelfSubjectRulesReview\" then $RULES_CLASS else \"no\" end" <<<"$OUT")
		if [[ $got != "$want" ]]; then
			violation "$what: in $ns the token has $got rights, expected $want"
			rc=1
		fi
		i=$((i + 1))
	done
	CHECKS=$((CHECKS + 1))
	return $rc
}

# ---------------------------------------------------------------------------------------------- workers
# soak_session USER N MODE ROLE: login, both kubeconfigs checked. Sets UNTIL (ms) and SESSION; returns 0 when
# the session is live and checked.
soak_session() {
	local user=$1 n=$2 mode=$3 role=$4 home=$RUN/users/$1 args=(login -o json) kc t0
	if [[ $mode == exec ]]; then args+=(--exec); fi
	if [[ $user == carol && $role == edit ]]; then args+=(--role edit); fi
	t0=$(now_ms)
	soak_tka "$user" "${args[@]}"
	soak_log "login $user $n $(($(now_ms) - t0)) $TRIES"
	RETRIES=$((RETRIES + TRIES - 1))
	if ((RC != 0)); then
		soak_log "failure $user login (cycle $n) exit $RC after $TRIES attempts: $(head -c 300 <<<"$ERR")"
		return 1
	fi
	UNTIL=$(epoch_ms "$(jq -r .until <<<"$OUT")") SESSION=$(jq -r .session <<<"$OUT")
	if [[ $(jq -r .role <<<"$OUT") != "$role" ]]; then violation "login answered role $(jq -r .role <<<"$OUT"), expected $role"; fi
	kc=$(sed -n "s/^export KUBECONFIG='\([^:']*\).*$/\1/p" <<<"$ERR")
	if [[ ! -f $kc ]]; then
		soak_log "failure $user login (cycle $n) wrote no kubeconfig: $(head -c 300 <<<"$ERR")"
		return 1
	fi
	check_access "$user" "$kc" "$role" "$UNTIL" "cycle $n login's $mode kubeconfig" || return 1
	args=(kubeconfig --stdout -o json)
	if [[ $mode == exec ]]; then args+=(--exec); fi
	soak_tka "$user" "${args[@]}"
	RETRIES=$((RETRIES + TRIES - 1))
	if ((RC != 0)); then
		soak_log "failure $user kubeconfig (cycle $n) exit $RC after $TRIES attempts: $(head -c 300 <<<"$ERR")"
		return 1
	fi
	printf '%s\n' "$OUT" >"$home/fresh.kubeconfig"
	check_access "$user" "$home/fresh.kubeconfig" "$role" "$UNTIL" "cycle $n tka kubeconfig ($mode)" || return 1
}

# soak_logout USER N: logout, retried; "not signed in" on a retry means the first attempt went through.
soak_logout() {
	local user=$1 n=$2
	soak_tka "$user" logout --quiet
	RETRIES=$((RETRIES + TRIES - 1))
	if ((RC == 0)) || { ((RC == 4 && TRIES > 1)); }; then return 0; fi
	if ((RC == 4)); then violation "cycle $n: logout found no session (ended early?): $(head -c 300 <<<"$ERR")"
	else soak_log "failure $user logout (cycle $n) exit $RC after $TRIES attempts: $(head -c 300 <<<"$ERR")"; fi
	return 1
}

# signin_code NAME: the apiserver's status for the TkaSignin NAME (200 present, 404 gone, 000 unreachable).
signin_code() {
	nsx srv curl -s -o /dev/null -w '%{http_code}' -m 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
		--key "$PKI/admin.key" "$APISERVER/apis/tka.specht-labs.de/v1alpha1/namespaces/tka-system/tkasignins/$1" || true
}

# known_until NAME: the valid_until the controller last wrote into the TkaSignin NAME's status.
known_until() {
	nsx srv curl -s -m 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
		"$APISERVER/apis/tka.specht-labs.de/v1alpha1/namespaces/tka-system/tkasignins/$1" 2>/dev/null |
		jq -r '.status.valid_until // empty' 2>/dev/null || true
}

# wait_gone SESSION UNTIL_MS SEEN: waits for the TkaSignin to be gone and records the expiry. SEEN is 1 when
# the controller knew this end in time (it wrote it into the status), 0 when it could not have.
wait_gone() {
	local session=$1 until=$2 seen=$3 now
	now=$(now_ms)
	if ((until > now)); then sleep "$(((until - now) / 1000)).$(printf '%03d' $(((until - now) % 1000)))"; fi
	while [[ $(signin_code "$session") != 404 ]]; do
		if (($(now_ms) - until > SOAK_RETRY_SECONDS * 1000)); then
			soak_log "failure $SOAK_ME session $session still there $SOAK_RETRY_SECONDS s after its end"
			return 1
		fi
		sleep 0.1
	done
	soak_log "expiry $SOAK_ME $session $until $(now_ms) $seen"
}

# shorten SESSION: moves the session's start back so that it ends 10-15 s from now, then waits until the
# controller has seen that (its status shows the new end) or the end is 1 s away. Echoes "<end ms> <seen>".
shorten() {
	local session=$1 end deadline=$((SECONDS + SOAK_RETRY_SECONDS))
	while :; do
		# Whole seconds: Kubernetes stores times with second precision.
		end=$((($(now_ms) / 1000 + 10 + RANDOM % 6) * 1000))
		if nsx srv "$PEERS/kubectl" --kubeconfig "$K8S/admin.kubeconfig" --request-timeout=5s -n tka-system \
			patch tkasignin "$session" --type merge \
			-p "{\"spec\":{\"requested_at\":\"$(rfc3339 $((end - SOAK_PERIOD_SECONDS * 1000)))\"}}" >/dev/null 2>&1; then
			break
		fi
		((SECONDS < deadline)) || return 1
		sleep 0.5
	done
	# The controller learns of the change through its watch, which may still be reconnecting after an
	# apiserver restart; an end it has not seen cannot be held to the 5 s.
	while [[ $(known_until "$session") != "$(rfc3339 "$end")" ]]; do
		if (($(now_ms) >= end - 1000)); then
			echo "$end 0"
			return
		fi
		sleep 0.2
	done
	echo "$end 1"
}

# soak_worker USER: cycles until its share is done and the chaos is over.
soak_worker() {
	local user=$1 n=0 mode role quota=0 end kind ok
	SOAK_ME=$user RETRIES=0 CHECKS=0 SOAK_SA=
	if [[ " ${LOGOUT_USERS[*]} " == *" $user "* ]]; then
		quota=$(((SOAK_CYCLES + ${#LOGOUT_USERS[@]} - 1) / ${#LOGOUT_USERS[@]}))
	fi
	while ((n < quota)) || [[ ! -e $SOAK/chaos.done ]]; do
		[[ -e $SOAK/abort ]] && break
		n=$((n + 1))
		mode=token role=${SOAK_ROLE[$user]} kind=logout ok=ok
		if ((n % 2 == 0)); then mode=exec; fi
		if [[ $user == carol ]] && ((n % 4 >= 2)); then role=edit; fi
		case $user in erin) kind=expiry ;; frank) kind=real-expiry ;; esac
		if ! soak_session "$user" "$n" "$mode" "$role"; then
			ok=failed
			# Whatever state it is in, end the session so it cannot leak.
			soak_logout "$user" "$n" >/dev/null || true
		else
			case $kind in
			logout) soak_logout "$user" "$n" || ok=failed ;;
			expiry)
				if end=$(shorten "$SESSION"); then wait_gone "$SESSION" $end || ok=failed
				else soak_log "failure $user could not shorten $SESSION"; ok=failed; fi ;;
			real-expiry) wait_gone "$SESSION" "$UNTIL" 1 || ok=failed ;;
			esac
		fi
		soak_log "cycle $user $n $kind $mode $role $ok"
	done
	soak_log "totals $user retries $RETRIES checks $CHECKS"
}

# -------------------------------------------------------------------------------------------------- chaos
# up: the apiserver ready and tka-server ready as leader with its tailnet node Running.
soak_up() {
	nsx srv curl -fsS -m 2 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
		"$APISERVER/readyz" >/dev/null 2>&1 && ready_ok
}

# all_threads_gone PID: PID has exited or is a zombie with no thread left, so its files and sockets are closed.
all_threads_gone() {
	local tasks
	[[ -d /proc/$1 ]] || return 0
	[[ $(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) == Z ]] || return 1
	tasks=$(find "/proc/$1/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
	((tasks <= 1))
}

soak_chaos() {
	local victims=() v i n=0 pid t0
	for ((i = 0; i < SOAK_KILLS; i++)); do victims+=("${SOAK_VICTIMS[i % ${#SOAK_VICTIMS[@]}]}"); done
	mapfile -t victims < <(printf '%s\n' "${victims[@]}" | shuf)
	for v in "${victims[@]}"; do
		# A random moment: 1 s to SOAK_GAP s (millisecond resolution) after the last recovery.
		sleep "$(shuf -i 1000-$((SOAK_GAP * 1000)) -n 1 | sed 's/...$/.&/')"
		n=$((n + 1))
		case $v in
		tka-server) pid=${PID[tka-server]} ;;
		tailscaled) pid=$(ps -o pid=,comm= --ppid "${PID[tka-server]}" | awk '$2 == "tailscaled" { print $1; exit }') ;;
		kube-apiserver) pid=${PID[kube-apiserver]} ;;
		esac
		if [[ -z $pid ]] || ! running "$pid"; then
			echo "abort: no running $v to kill" >>"$SOAK/chaos.log"
			touch "$SOAK/abort"
			return 1
		fi
		t0=$(now_ms)
		kill -KILL "$pid"
		echo "kill $v $pid $t0" >>"$SOAK/chaos.log"
		# Not `running`: a multithreaded process's first thread shows Z while its other threads still exit and
		# hold its sockets, and a restart then fails with "address already in use" (seen with kube-apiserver).
		while ! all_threads_gone "$pid"; do sleep 0.05; done
		case $v in
		tka-server)
			mv "$LOGS/tka-server.log" "$LOGS/tka-server.killed-$n.log"
			launch_tka_server
			;;
		kube-apiserver)
			mv "$LOGS/kube-apiserver.log" "$LOGS/kube-apiserver.killed-$n.log"
			launch_kube_apiserver
			;;
		tailscaled) sleep 1 ;; # tka-server notices and restarts it; /ready is not 200 meanwhile
		esac
		i=$((SECONDS + 120))
		until soak_up; do
			if ((SECONDS >= i)); then
				echo "abort: not up 120 s after killing $v" >>"$SOAK/chaos.log"
				touch "$SOAK/abort"
				return 1
			fi
			sleep 0.1
		done
		echo "up $v $(now_ms) $(($(now_ms) - t0))" >>"$SOAK/chaos.log"
	done
}

# ------------------------------------------------------------------------------------------------ results
# What is left of tka's objects: "<TkaSignins> <ServiceAccounts> <Secrets> <ClusterRoleBindings> <RoleBindings>".
leftovers() {
	local k=(nsx srv "$PEERS/kubectl" --kubeconfig "$K8S/admin.kubeconfig" --request-timeout=10s)
	local names='[.items[].metadata.name | select(startswith("tka-user-"))] | length'
	echo "$("${k[@]}" get tkasignins -n tka-system -o json | jq '.items | length')" \
		"$("${k[@]}" get serviceaccounts -n tka-system -o json | jq "$names")" \
		"$("${k[@]}" get secrets -n tka-system -o json | jq '[.items[].metadata.name | select(startswith("tka-"))] | length')" \
		"$("${k[@]}" get clusterrolebindings -o json | jq "$names")" \
		"$("${k[@]}" get rolebindings -A -o json | jq "$names")"
}

# Expiry lags: "<lag ms> <healthy|outage|unseen>" per expiry. With a kill between the end and the moment it
# was gone, the lag counts from the recovery; "unseen": the controller had not seen the shortened end.
expiry_lags() {
	cat "$SOAK"/*.log | awk -v chaos="$SOAK/chaos.log" '
		# The controller stops only with tka-server or the apiserver; a killed tailscaled does not stop it.
		BEGIN { while ((getline l < chaos) > 0) { split(l, f, " "); if (f[1] == "kill") { v[++n] = f[2]; k[n] = f[4] } if (f[1] == "up") u[n] = f[3] } }
		$1 == "expiry" && $6 == 0 { print $5 - $4, "unseen"; next }
		$1 == "expiry" { until = $4; gone = $5; from = until; kind = "healthy"
			for (i = 1; i <= n; i++) if (v[i] != "tailscaled" && k[i] <= gone && (u[i] == "" || u[i] >= until)) { kind = "outage"; if (u[i] > from) from = u[i] }
			print gone - from, kind }'
}

soak() {
	SOAK=$RUN/soak
	mkdir -p "$SOAK"
	: >"$SOAK/chaos.log"
	phase "soak: $SOAK_CYCLES logout cycles (${LOGOUT_USERS[*]}), expiry cycles (${EXPIRY_USERS[*]}), $SOAK_KILLS kills"
	admin_kubectl create namespace soak-a >/dev/null
	admin_kubectl create namespace soak-b >/dev/null
	local ns u pids=() t0
	{
		echo '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'
		for ns in soak-a soak-b; do
			printf -- '---\n{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectRulesReview","spec":{"namespace":"%s"}}\n' "$ns"
		done
	} >"$SOAK/reviews.yaml"
	t0=$SECONDS
	(soak_chaos; touch "$SOAK/chaos.done") >"$SOAK/chaos.out" 2>&1 &
	pids+=($!)
	for u in "${SOAK_USERS[@]}"; do
		: >"$SOAK/$u.log"
		soak_worker "$u" >"$SOAK/$u.out" 2>&1 &
		pids+=($!)
	done
	SOAK_JOBS=("${pids[@]}")
	# On any exit the workers and the chaos loop stop first; on_exit (the teardown) reads the exit status
	# from $?, which `(exit $rc)` sets, so errexit and the ERR trap must be off by then.
	trap 'rc=$?; set +e; trap - ERR; kill "${SOAK_JOBS[@]}" 2>/dev/null; (exit $rc); on_exit' EXIT
	wait "${pids[@]}" || true
	SOAK_SECONDS=$((SECONDS - t0))
	soak_verify
}

soak_verify() {
	local left cycles kills lags healthy outage unseen viol fail checks retries deadline
	wait_for 120 "the control plane after the soak" - soak_up
	# The last expiry cycles may still be ending; nothing else is running.
	deadline=$((SECONDS + 60))
	until [[ $(leftovers) == "0 0 0 0 0" ]] || ((SECONDS >= deadline)); do sleep 1; done
	left=$(leftovers)
	cycles=$(cat "$SOAK"/*.log | awk '$1 == "cycle" { n[$4]++; if ($7 != "ok") f++ } END { for (k in n) printf "%s %d, ", k, n[k]; printf "failed %d", f }')
	kills=$(awk '$1 == "kill" { n[$2]++ } $1 == "up" { t[++m] = $4 } END { for (k in n) printf "%s %d, ", k, n[k]; printf "total %d", m }' "$SOAK/chaos.log")
	lags=$(expiry_lags)
	healthy=$(awk '$2 == "healthy" { print $1 }' <<<"$lags")
	outage=$(awk '$2 == "outage" { print $1 }' <<<"$lags")
	unseen=$(awk '$2 == "unseen" { print $1 }' <<<"$lags")
	viol=$(cat "$SOAK"/*.log | grep -c '^violation' || true)
	fail=$(cat "$SOAK"/*.log | grep -c '^failure' || true)
	checks=$(cat "$SOAK"/*.log | awk '$1 == "totals" { c += $6 } END { print c + 0 }')
	retries=$(cat "$SOAK"/*.log | awk '$1 == "totals" { r += $4 } END { print r + 0 }')
	SOAK_SUMMARY=(
		"| cycles (logout, expiry, real-expiry; failed) | $cycles |"
		"| SIGKILLs (by victim; all recovered) | $kills |"
		"| recovery after a kill (apiserver and tka-server ready), p50 / max | $(awk '$1 == "up" { print $4 }' "$SOAK/chaos.log" | sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%d / %d ms", v[int((NR + 1) / 2)], v[NR]; else printf "-" }') |"
		"| kubeconfig checks (SelfSubjectReview + 2 SelfSubjectRulesReviews each) | $checks, $viol violations |"
		"| requests retried because of a kill | $retries |"
		"| expiry → TkaSignin gone, healthy: n, p50, max | $(sort -n <<<"$healthy" | awk 'NF { v[++n] = $1 } END { if (n) printf "%d, %d ms, %d ms", n, v[int((n + 1) / 2)], v[n]; else printf "0" }') |"
		"| expiry with a kill in between → gone after recovery: n, max | $(sort -n <<<"$outage" | awk 'NF { v[++n] = $1 } END { if (n) printf "%d, %d ms", n, v[n]; else printf "0" }') |"
		"| shortened end the controller had not seen in time (watch reconnecting) → gone: n, max | $(sort -n <<<"$unseen" | awk 'NF { v[++n] = $1 } END { if (n) printf "%d, %d ms", n, v[n]; else printf "0" }') |"
		"| tka login wall time incl. retries: p50, p99, max; over 10 s | $(cat "$SOAK"/*.log | awk '$1 == "login" { print $4 }' | sort -n | awk '{ v[NR] = $1; if ($1 > 10000) s++ } END { if (NR) printf "%d, %d, %d ms; %d of %d", v[int((NR + 1) / 2)], v[int((NR * 99 + 99) / 100)], v[NR], s, NR; else printf "-" }') |"
		"| left at the end: TkaSignins SAs Secrets CRBs RBs | $left |"
		"| duration | ${SOAK_SECONDS} s |"
	)
	printf '%s\n' "${SOAK_SUMMARY[@]}"
	if grep -q '^abort' "$SOAK/chaos.log"; then fail "soak: every kill recovered" "$(grep '^abort' "$SOAK/chaos.log")" "$LOGS/tka-server.log"
	else pass "soak: every kill recovered" "$kills"; fi
	if ((viol == 0)); then pass "soak: no token of the wrong user or role, none revoked early" "$checks checks"
	else fail "soak: no token of the wrong user or role, none revoked early" "$(grep -h '^violation' "$SOAK"/*.log | head -n 5)"; fi
	if ((fail == 0)); then pass "soak: every cycle completed" "$cycles"
	else fail "soak: every cycle completed" "$(grep -h '^failure' "$SOAK"/*.log | head -n 5)" "$LOGS/tka-server.log"; fi
	if [[ $left == "0 0 0 0 0" ]]; then pass "soak: nothing leaked (TkaSignins, ServiceAccounts, Secrets, bindings)"
	else fail "soak: nothing leaked (TkaSignins, ServiceAccounts, Secrets, bindings)" "left: $left"; fi
	if [[ -n $healthy ]] && awk '$2 != "unseen" && $1 > 5000 { bad = 1 } END { exit bad }' <<<"$lags"; then
		pass "soak: every expired session gone within 5 s (of recovery, after a kill)" "$(wc -l <<<"$lags") expiries"
	else fail "soak: every expired session gone within 5 s (of recovery, after a kill)" "$(grep -v unseen <<<"$lags" | sort -rn | head -n 5 | tr '\n' ' ')"; fi
}

write_results() {
	{
		echo "# tka chaos soak ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg))"
		echo
		echo "| What | Result |"
		echo "|---|---|"
		printf '%s\n' "${SOAK_SUMMARY[@]}"
		echo
		echo "Checks: $PASSED passed, $FAILED failed."
	} >"$RUN/results.md"
	echo "(${RUN#"$REPO"/}/results.md)"
}
