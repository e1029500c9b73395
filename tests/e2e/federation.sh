# shellcheck shell=bash
# Federation mode of tests/e2e/run.sh (`run.sh --federation`): a second
# "cluster" in namespace $NS_PREFIX-mem (10.77.0.6) with its own etcd + kube-apiserver and a member tka-server
# (node tka-west, tag:tka-member, federation.loginServer https://tka.tailnet.test). Sourced by run.sh after its
# own functions, so the definitions here that share a name (write_policy) replace run.sh's.

NAMESPACES+=(mem)
IP[mem]=10.77.0.6
MEM_APISERVER=https://10.77.0.6:6443
MEM_HOST=tka-west.$TAILNET
MEM_CLUSTER=west-cluster
# The primary admits members by tag and expects heartbeats every 2 s (removal after 3 missed: 6 s).
TKA_EXTRA_CONFIG='federation:
  memberTags: [tag:tka-member]
  heartbeatInterval: 2s
  requestTimeout: 3s'

# write_policy ROLE: as run.sh's, plus the member's tag; alice's rule names both clusters (a rule without
# `clusters` never reaches members).
write_policy() {
	cat >"$HS/policy.json" <<EOF
{
  "tagOwners": { "tag:tka": ["alice@"], "tag:ci": ["alice@"], "tag:tka-member": ["alice@"] },
  "grants": [
    { "src": ["*"], "dst": ["*"], "ip": ["*"] },
    { "src": ["alice@"], "dst": ["tag:tka"],
      "app": { "$CAP": [ { "role": "$1", "period": "1h", "clusters": ["e2e-cluster", "$MEM_CLUSTER"] } ] } }
  ]
}
EOF
}

mem_kubectl() { nsx mem "$PEERS/kubectl" --kubeconfig "$K8S_MEM/admin.kubeconfig" "$@"; }

# The member's apiserver certificate and the member server's certificate, from run.sh's CA.
make_member_pki() {
	local keygen=(genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)
	(
		cd "$PKI"
		pki_leaf apiserver-mem /CN=kube-apiserver extendedKeyUsage=serverAuth \
			"subjectAltName=IP:${IP[mem]},IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes"
		pki_leaf tka-west "/CN=$MEM_HOST" extendedKeyUsage=serverAuth "subjectAltName=DNS:$MEM_HOST"
		# Its own ServiceAccount signing key: a token of one cluster is worthless on the other.
		openssl "${keygen[@]}" -out sa-mem.key 2>/dev/null
		openssl pkey -in sa-mem.key -pubout -out sa-mem.pub
		rm -f ./*.csr ./*.ext ca.srl
	)
}

# The member cluster: the same flags as run.sh's control plane, on the member's address.
start_member_controlplane() {
	phase "member cluster: etcd + kube-apiserver on $MEM_APISERVER"
	K8S_MEM=$RUN/k8s-mem
	mkdir -p "$K8S_MEM"
	spawn etcd-mem mem "$PEERS/etcd" --name=tka-e2e-mem --data-dir="$K8S_MEM/etcd" \
		--listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
		--listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
		--initial-cluster=tka-e2e-mem=http://127.0.0.1:2380 --unsafe-no-fsync --log-level=warn
	wait_for 60 "member etcd /health" etcd-mem nsx mem curl -fsS http://127.0.0.1:2379/health
	spawn kube-apiserver-mem mem "$PEERS/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address="${IP[mem]}" --advertise-address="${IP[mem]}" --secure-port=6443 \
		--cert-dir="$K8S_MEM/apiserver-certs" --tls-cert-file="$PKI/apiserver-mem.crt" \
		--tls-private-key-file="$PKI/apiserver-mem.key" --client-ca-file="$PKI/ca.crt" --authorization-mode=RBAC \
		--service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa-mem.pub" \
		--service-account-signing-key-file="$PKI/sa-mem.key" --api-audiences=https://kubernetes.default.svc \
		--service-cluster-ip-range=10.0.0.0/24 --enable-priority-and-fairness=false \
		--endpoint-reconciler-type=none --profiling=false
	(APISERVER=$MEM_APISERVER write_kubeconfig "$K8S_MEM/admin.kubeconfig" admin \
		"client-certificate-data: $(base64 -w0 "$PKI/admin.crt")" "client-key-data: $(base64 -w0 "$PKI/admin.key")")
	wait_for 90 "member kube-apiserver /readyz" kube-apiserver-mem nsx mem curl -fsS --cacert "$PKI/ca.crt" \
		--cert "$PKI/admin.crt" --key "$PKI/admin.key" "$MEM_APISERVER/readyz"
	wait_for 30 "the member's bootstrap ClusterRoles" kube-apiserver-mem mem_kubectl get clusterrole view
	(
		admin_kubectl() { mem_kubectl "$@"; }
		aggregate_cluster_roles
	)
}

# The member tka-server, configured like the deployment guide's federated ConfigMap.
start_member_server() {
	phase "member tka-server (node tka-west, tag:tka-member) pointing at https://$TKA_HOST"
	TKAD_MEM=$RUN/tka-server-mem
	mkdir -p "$TKAD_MEM/state"
	mkdir -p -m 0700 "$TKAD_MEM/run" # private to the server (tailscale.runDir is refused otherwise)
	(
		TKAD=$TKAD_MEM APISERVER=$MEM_APISERVER
		admin_kubectl() { mem_kubectl "$@"; }
		install_tka
	)
	cp "$PKI/tka-west.crt" "$PKI/tka-west.key" "$PKI/ca.crt" "$TKAD_MEM/"
	cat >"$TKAD_MEM/config.yaml" <<EOF
tailscale:
  hostname: tka-west
  port: 443
  tailnet: $TAILNET
  controlURL: $HEADSCALE_URL
  stateDir: $TKAD_MEM/state
  runDir: $TKAD_MEM/run
  tailscaledPath: $PEERS/tailscaled
tls:
  mode: files
  certFile: $TKAD_MEM/tka-west.crt
  keyFile: $TKAD_MEM/tka-west.key
health:
  port: 8080
  bindAddress: 127.0.0.1
operator:
  namespace: tka-system
  clusterName: $MEM_CLUSTER
  contextPrefix: west-
  userPrefix: west-user-
  allowedRoles: [view, edit]
clusterInfo:
  apiEndpoint: $MEM_APISERVER
  caData: $(base64 -w0 "$PKI/ca.crt")
federation:
  loginServer: https://$TKA_HOST
  heartbeatInterval: 2s
EOF
	"$TKA_SERVER" check --config "$TKAD_MEM/config.yaml" >"$LOGS/tka-server-mem-check.log" 2>&1 ||
		die "tka-server check rejected the member configuration" "$LOGS/tka-server-mem-check.log"
	MEM_KEY=$(hs preauthkeys create --user "$(user_id alice)" --tags tag:tka-member --reusable --expiration 1h -o json | jq -er .key)
	if ((SERVER_UID != 0)); then
		nsx mem sysctl -qw net.ipv4.ip_unprivileged_port_start=0
		chown -R "$SERVER_UID:$SERVER_UID" "$TKAD_MEM"
	fi
	launch_member_server
	wait_for 120 "member tka-server /ready" tka-server-mem member_ready
}
launch_member_server() {
	local run_as=()
	if ((SERVER_UID != 0)); then run_as=(setpriv --reuid "$SERVER_UID" --regid "$SERVER_UID" --clear-groups); fi
	# SSL_CERT_FILE: the member verifies the primary's certificate against the test CA.
	spawn tka-server-mem mem "${run_as[@]}" env HOME="$TKAD_MEM" TS_AUTHKEY="$MEM_KEY" TS_DEBUG_USE_DERP_HTTP=1 \
		SSL_CERT_FILE="$TKAD_MEM/ca.crt" KUBECONFIG="$TKAD_MEM/kubeconfig" RUST_LOG="${RUST_LOG:-info}" \
		"$TKA_SERVER" serve --config "$TKAD_MEM/config.yaml"
}
member_ready() { [[ $(nsx mem curl -sf -m 2 http://127.0.0.1:8080/ready | jq -r .reason) == ok ]]; }
# member_listed STATUS: `tka get clusters` as alice shows the member with STATUS.
member_listed() {
	tka_as alice get clusters
	grep -Eq "^$MEM_CLUSTER +$1( |$)" <<<"$OUT"
}
member_gone() {
	tka_as alice get clusters
	((RC == 0)) && ! grep -q "^$MEM_CLUSTER " <<<"$OUT"
}
# poll_401 KUBECONFIG CONTEXT LIMIT_S: kubectl on alice's node until 401 (0) or LIMIT_S seconds (1).
poll_401() {
	local deadline=$((SECONDS + $3))
	while ((SECONDS < deadline)); do
		kubectl_as "$1" --context "$2" get --raw /api
		if ((RC != 0)) && grep -q Unauthorized <<<"$OUT"; then return 0; fi
		sleep 0.2
	done
	return 1
}

scenario_federation() {
	local s=federation t0 ctx west saved deadline
	say "Scenario federation: one login at the primary, a context for the member too; member down; logout revokes both"
	write_policy view
	kill -HUP "${PID[headscale]}"
	t0=$(now_ms)
	deadline=$((SECONDS + 60))
	until member_listed healthy || ((SECONDS >= deadline)); do sleep 0.5; done
	if member_listed healthy; then pass "$s: the member registered; tka get clusters lists it healthy" "$(($(now_ms) - t0)) ms"
	else fail "$s: the member registered" "$OUT $ERR" "$LOGS/tka-server-mem.log"; return; fi
	# Both doctors see the federation: the primary its member, the member its primary and an accepted heartbeat.
	server_doctor
	if has_line '^✓ federation +primary: 1 member\(s\) healthy'; then pass "$s: tka-server doctor on the primary: 1 member healthy"
	else fail "$s: tka-server doctor on the primary: 1 member healthy" "exit $RC: $OUT"; fi
	DOCTOR_NS=mem DOCTOR_DIR=$TKAD_MEM server_doctor
	if ((RC == 0)) && has_line "^✓ federation +member of https://$TKA_HOST: reachable, last heartbeat accepted [0-9]+ s ago"; then
		pass "$s: tka-server doctor on the member: primary reachable, heartbeat accepted" "$(grep '^✓ federation' <<<"$OUT")"
	else fail "$s: tka-server doctor on the member: primary reachable, heartbeat accepted" "exit $RC: $OUT"; fi

	tka_login alice login
	if ((RC != 0)); then fail "$s: tka login at the primary" "exit $RC: $ERR" "$LOGS/tka-server.log"; return; fi
	pass "$s: tka login at the primary" "exit 0"
	kubectl_as "$KC" config get-contexts -o name
	west=$(grep '^west-' <<<"$OUT" || true)
	ctx=$(grep -v '^west-' <<<"$OUT" | head -n1)
	if [[ -n $west && -n $ctx ]]; then pass "$s: the kubeconfig has a context per cluster" "$ctx, $west"
	else fail "$s: the kubeconfig has a context per cluster" "$OUT"; return; fi
	kubectl_as "$KC" --context "$ctx" auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-alice-* ]]; then pass "$s: kubectl on the primary's context" "$OUT"
	else fail "$s: kubectl on the primary's context" "exit $RC: $OUT"; return; fi
	kubectl_as "$KC" config view --minify --context "$west" -o 'jsonpath={.clusters[0].cluster.server}'
	if [[ $OUT == "$MEM_APISERVER" ]]; then pass "$s: the member's context points at the member's apiserver" "$OUT"
	else fail "$s: the member's context points at the member's apiserver" "$OUT"; return; fi
	# The clusters sign tokens with different keys: only a token the member minted is accepted there.
	kubectl_as "$KC" --context "$west" auth whoami -o jsonpath='{.status.userInfo.username}'
	if ((RC == 0)) && [[ $OUT == system:serviceaccount:tka-system:tka-user-alice-* ]]; then pass "$s: kubectl on the member's context (its own apiserver)" "$OUT"
	else fail "$s: kubectl on the member's context" "exit $RC: $OUT" "$LOGS/tka-server-mem.log"; return; fi
	kubectl_as "$KC" --context "$west" get pods -A
	if ((RC == 0)); then pass "$s: kubectl get pods -A on the member"; else fail "$s: kubectl get pods -A on the member" "$OUT"; return; fi
	if mem_kubectl get tkasignins -n tka-system -o json | jq -e --arg p "$TKA_HOST" \
		'[.items[] | select(.spec.origin.kind == "federation" and .spec.origin.primary == $p)] | length == 1' >/dev/null; then
		pass "$s: the member's TkaSignin has origin federation from $TKA_HOST"
	else fail "$s: the member's TkaSignin has origin federation" "$(mem_kubectl get tkasignins -n tka-system -o yaml)"; return; fi

	say "The member's server crashes: the primary still logs alice in and names the failed cluster (exit 6)"
	# SIGKILL, not a graceful stop: a graceful stop takes seconds (drain, tailscaled's flush), and with
	# heartbeats every 2 s the primary may already count the member stale (not part of a login) by the time
	# the login starts.
	kill_tree --crash "${PID[tka-server-mem]}"
	tka_login alice login
	if ((RC == 6)) && grep -q "$MEM_CLUSTER" <<<"$ERR"; then pass "$s: login with the member down exits 6 naming it" "$(grep -m1 "$MEM_CLUSTER" <<<"$ERR")"
	else fail "$s: login with the member down exits 6 naming it" "exit $RC: $ERR"; return; fi
	# Partial success still writes the kubeconfig of the clusters that worked and prints the export line.
	KC=$(sed -n "s/^export KUBECONFIG='\(.*\)'$/\1/p" <<<"$OUT")
	KC=${KC%%:*}
	kubectl_as "$KC" --context "$ctx" auth whoami
	if ((RC == 0)); then pass "$s: the primary's context works with the member down"; else fail "$s: the primary's context works with the member down" "$OUT"; return; fi
	deadline=$((SECONDS + 30))
	until member_gone || ((SECONDS >= deadline)); do sleep 0.5; done
	if member_gone; then pass "$s: the dead member is dropped after missed heartbeats"; else fail "$s: the dead member is dropped" "$OUT"; return; fi

	say "The member comes back; logout at the primary revokes on both clusters"
	mv "$LOGS/tka-server-mem.log" "$LOGS/tka-server-mem.1.log"
	launch_member_server
	wait_for 120 "member tka-server /ready after the restart" tka-server-mem member_ready
	deadline=$((SECONDS + 60))
	until member_listed healthy || ((SECONDS >= deadline)); do sleep 0.5; done
	tka_login alice login
	if ((RC != 0)); then fail "$s: login with the member back" "exit $RC: $ERR" "$LOGS/tka-server-mem.log"; return; fi
	saved=$RUN/users/alice/fed-saved.kubeconfig
	cp "$KC" "$saved"
	kubectl_as "$saved" --context "$west" auth whoami
	if ((RC != 0)); then fail "$s: the member's context works again" "$OUT"; return; fi
	tka_as alice logout
	if ((RC == 0)); then pass "$s: tka logout at the primary"; else fail "$s: tka logout at the primary" "exit $RC: $ERR"; return; fi
	# kube-apiserver caches a successful token authentication for 10 s.
	if poll_401 "$saved" "$ctx" 15; then pass "$s: the primary's token gets 401 after logout"
	else fail "$s: the primary's token gets 401 after logout" "$OUT"; fi
	if poll_401 "$saved" "$west" 15; then pass "$s: the member's token gets 401 after logout"
	else fail "$s: the member's token gets 401 after logout" "$OUT" "$LOGS/tka-server-mem.log"; fi
}
