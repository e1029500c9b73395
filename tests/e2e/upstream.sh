# shellcheck shell=bash
# The upstream Go CLI as a real client of our server: `ts-k8s-auth`, built from
# github.com/spechtlabs/tka v0.2.2 by tests/peers/build.sh, run by dave (grant: view) on his own node
# ($NS_PREFIX-dave, 10.77.0.8). It must work against our server as it does against upstream's: login, get
# login, get kubeconfig, cluster-info, reauth, signout and shell, with kubectl using the kubeconfigs it writes,
# and a signed-out token refused. Its login (POST, then polling for the kubeconfig with back-off) is timed
# beside ours (one round trip) on the same node. Sourced by run.sh after its own functions.

if ((!FEDERATION)); then
	NAMESPACES+=(dave)
	IP[dave]=10.77.0.8
	NODE_NS[dave]=dave
fi
UPSTREAM=$PEERS/ts-k8s-auth

start_upstream_node() {
	start_node dave dave "$(authkey dave)"
	wait_for 60 "dave's node to see the tka node" - peer_ip dave tka
	map_tka dave "$(peer_ip dave tka)"
}

# upstream_as ARGS...: ts-k8s-auth as dave on his node, with its own home and temp dir (where it writes its
# kubeconfigs), trusting the test CA; stdout in $OUT, stderr in $ERR, exit code in $RC. `-t notty`: no colours
# or spinner. STDIN_SCRIPT, when set, is its standard input (for `shell`).
upstream_as() {
	local home=$RUN/users/dave
	mkdir -p "$home/tmp"
	RC=0
	nsx dave env -u KUBECONFIG HOME="$home" TMPDIR="$home/tmp" SSL_CERT_FILE="$PKI/ca.crt" SHELL=/bin/bash \
		PATH="$PEERS:$PATH" "$UPSTREAM" --server "$TKA_URL" -t notty "$@" \
		<<<"${STDIN_SCRIPT:-}" >"$home/.stdout" 2>"$home/.stderr" || RC=$?
	OUT=$(<"$home/.stdout") ERR=$(<"$home/.stderr")
	printf '$ ts-k8s-auth %s   # as dave, exit %s\n%s\n%s\n' "$*" "$RC" "$OUT" "$ERR" >>"$LOGS/steps.log"
	if ((DEMO)); then
		printf '  %s$ ts-k8s-auth %s%s   %s# upstream Go CLI, as dave on his node, exit %s%s\n' "$B" "$*" "$N" "$D" "$RC" "$N"
		if [[ -n $OUT ]]; then printf '%s\n' "$OUT" | head -n 12 | sed 's/^/    /'; fi
		if [[ -n $ERR ]]; then printf '%s\n' "$ERR" | head -n 12 | sed 's/^/    /'; fi
	fi
}
# upstream_kc: the kubeconfig named by the export line ts-k8s-auth printed (`export KUBECONFIG=<file>`).
upstream_kc() { sed -n 's/^export KUBECONFIG=\(.*\)$/\1/p' <<<"$OUT" | tail -n 1; }
# dave_kubectl KUBECONFIG ARGS...: kubectl on dave's node.
dave_kubectl() { KUBECTL_NS=dave kubectl_as "$@"; }
# A user of tka-user-dave-*; the check name is $1, the kubeconfig $2.
check_dave_whoami() {
	dave_kubectl "$2" auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-dave-* ]]; then pass "$1" "$OUT"
	else fail "$1" "exit $RC: $OUT" "$LOGS/tka-server.log"; return 1; fi
}
# ms_until_401 TOKEN LIMIT_MS: polls the apiserver with TOKEN from dave's node every 50 ms; prints the ms until
# the first 401, or -1 after LIMIT_MS.
ms_until_401() {
	# shellcheck disable=SC2016
	nsx dave env CA="$PKI/ca.crt" TOKEN="$1" LIMIT="$2" APISERVER="$APISERVER" bash -c '
		ms() { echo $(($(date +%s%N) / 1000000)); }
		t0=$(ms)
		while :; do
			code=$(curl -s -o /dev/null -w "%{http_code}" --cacert "$CA" -H "Authorization: Bearer $TOKEN" "$APISERVER/api")
			if [[ $code == 401 ]]; then echo $(($(ms) - t0)); exit 0; fi
			if (($(ms) - t0 > LIMIT)); then echo -1; exit 0; fi
			sleep 0.05
		done'
}

scenario_upstream() {
	say "Scenario upstream CLI: dave runs upstream's Go CLI (ts-k8s-auth v0.2.2) against our server"
	note "Wire compatibility: the upstream client speaks its own protocol (POST /login, then polls /kubeconfig)."
	local s=upstream kc kc2 token lat i t0 ours=() theirs=()
	if [[ ! -x $UPSTREAM ]]; then fail "$s: $UPSTREAM is built (tests/peers/build.sh upstream)" "missing"; return; fi
	start_upstream_node

	upstream_as login -q
	kc=$(upstream_kc)
	if ((RC != 0)) || [[ ! -f $kc ]]; then fail "$s: ts-k8s-auth login" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	pass "$s: ts-k8s-auth login" "${kc#"$RUN"/}"
	check_dave_whoami "$s: kubectl with the kubeconfig ts-k8s-auth login wrote" "$kc" || return
	dave_kubectl "$kc" get pods -A
	if ((RC == 0)); then pass "$s: kubectl get pods -A works"; else fail "$s: kubectl get pods -A works" "$OUT"; return; fi

	upstream_as get login
	if ((RC == 0)) && grep -q dave <<<"$OUT"; then pass "$s: ts-k8s-auth get login" "$(grep -m1 -i 'user' <<<"$OUT" | tr -s ' ')"
	else fail "$s: ts-k8s-auth get login" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi

	upstream_as get kubeconfig -q
	kc2=$(upstream_kc)
	if ((RC == 0)) && [[ -f $kc2 && $kc2 != "$kc" ]]; then pass "$s: ts-k8s-auth get kubeconfig" "${kc2#"$RUN"/}"
	else fail "$s: ts-k8s-auth get kubeconfig" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	check_dave_whoami "$s: kubectl with the kubeconfig ts-k8s-auth get kubeconfig wrote" "$kc2" || return

	upstream_as cluster-info
	if ((RC == 0)) && grep -qF "$APISERVER" <<<"$OUT"; then pass "$s: ts-k8s-auth cluster-info" "names $APISERVER"
	else fail "$s: ts-k8s-auth cluster-info" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi

	upstream_as reauth -q
	kc=$(upstream_kc)
	if ((RC == 0)) && [[ -f $kc ]]; then pass "$s: ts-k8s-auth reauth (signout, then login)"
	else fail "$s: ts-k8s-auth reauth (signout, then login)" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	check_dave_whoami "$s: kubectl with the kubeconfig ts-k8s-auth reauth wrote" "$kc" || return

	# The token was used a moment ago, so the apiserver may honour it from its cache for up to 10 s.
	token=$(token_of "$kc")
	upstream_as signout
	if ((RC == 0)); then pass "$s: ts-k8s-auth signout"; else fail "$s: ts-k8s-auth signout" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	lat=$(ms_until_401 "$token" 15000)
	if ((lat >= 0)); then pass "$s: the signed-out token gets 401" "after $lat ms (used < 10 s before signout)"
	else fail "$s: the signed-out token gets 401" "still accepted 15 s after signout"; return; fi

	# shell: a subshell with KUBECONFIG set, fed a script on stdin; leaving it signs out.
	STDIN_SCRIPT='kubectl auth whoami -o jsonpath="{.status.userInfo.username}"; echo; cp "$KUBECONFIG" "$HOME/shell.kubeconfig"; exit' \
		upstream_as shell -q
	if ((RC == 0)) && grep -q '^system:serviceaccount:tka-system:tka-user-dave-' <<<"$OUT"; then
		pass "$s: ts-k8s-auth shell: kubectl in the subshell" "$(grep -m1 '^system:' <<<"$OUT")"
	else fail "$s: ts-k8s-auth shell: kubectl in the subshell" "exit $RC: $OUT $ERR" "$LOGS/tka-server.log"; return; fi
	lat=$(ms_until_401 "$(token_of "$RUN/users/dave/shell.kubeconfig")" 15000)
	if ((lat >= 0)); then pass "$s: leaving the shell signed out (its token gets 401)" "after $lat ms"
	else fail "$s: leaving the shell signed out (its token gets 401)" "still accepted 15 s later"; return; fi

	# Login wall time, ours and upstream's, alternating on the same node.
	local DEMO=0
	for i in $(seq 10); do
		t0=$(now_ms)
		tka_login dave
		ours+=($(($(now_ms) - t0)))
		if ((RC != 0)); then fail "$s: 10 logins each, tka and ts-k8s-auth" "tka login $i: exit $RC: $ERR"; return; fi
		t0=$(now_ms)
		upstream_as login -q
		theirs+=($(($(now_ms) - t0)))
		if ((RC != 0)); then fail "$s: 10 logins each, tka and ts-k8s-auth" "ts-k8s-auth login $i: exit $RC: $OUT $ERR"; return; fi
	done
	RESULT_DAVE_LOGIN_P50=$(percentile 50 "${ours[@]}") RESULT_DAVE_LOGIN_MAX=$(percentile 100 "${ours[@]}")
	RESULT_UPSTREAM_LOGIN_P50=$(percentile 50 "${theirs[@]}") RESULT_UPSTREAM_LOGIN_MAX=$(percentile 100 "${theirs[@]}")
	pass "$s: 10 logins each on dave's node" \
		"tka p50 $RESULT_DAVE_LOGIN_P50 ms, ts-k8s-auth p50 $RESULT_UPSTREAM_LOGIN_P50 ms"
	echo "dave: tka login wall times (ms): ${ours[*]}; ts-k8s-auth login: ${theirs[*]}" >>"$LOGS/steps.log"
	upstream_as signout
}
