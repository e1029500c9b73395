# shellcheck shell=bash
# Sourced by tests/static/check.sh: every kustomization under deploy/kustomize (the README's and the
# deployment guide's `kubectl apply -k` / `kubectl kustomize` commands) renders with the oldest kustomize v5
# (5.0.1), the newest that Go 1.26 builds (5.8.2; 5.8.3 needs Go 1.27) and the kubectl of the test peers, and
# all of them render the same objects.
# kubectl 1.32 ships kustomize 5.5: kustomize < 5.7 panicked on multi-document `$patch: delete` files
# (kubernetes-sigs/kustomize#5552).

echo "==> kustomize versions"
declare -A RENDERERS=()
for v in 5.0.1 5.8.2; do
	if [[ -x $PEERS/kustomize-$v ]]; then RENDERERS["kustomize $v"]="$PEERS/kustomize-$v build"; else
		fail "kustomize $v: $PEERS/kustomize-$v is missing (tests/peers/build.sh kustomize)"
	fi
done
kubectl_version() { "$1" version --client 2>/dev/null | awk '/Client Version/ {print $3}'; }
if [[ -x $KUBECTL ]]; then
	RENDERERS["kubectl $(kubectl_version "$KUBECTL")"]="$KUBECTL kustomize"
else
	fail "kubectl: $KUBECTL is missing (tests/peers/build.sh kube)"
fi
# A kubectl installed on this machine, as a user would run the commands (e.g. Debian's, with kustomize 5.5).
if system_kubectl=$(command -v kubectl) && [[ $system_kubectl != "$KUBECTL" ]]; then
	RENDERERS["kubectl $(kubectl_version "$system_kubectl") ($system_kubectl)"]="$system_kubectl kustomize"
fi
mapfile -t RENDERER_NAMES < <(printf '%s\n' "${!RENDERERS[@]}" | sort -V)

mapfile -t KUSTOMIZATIONS < <(find deploy/kustomize -name kustomization.yaml -printf '%h\n' | sort)
mkdir -p "$WORK/kustomize"
for dir in "${KUSTOMIZATIONS[@]}"; do
	# Components are not built on their own; the overlays that use them are.
	grep -q '^kind: Component' "$dir/kustomization.yaml" && continue
	first=
	for renderer in "${RENDERER_NAMES[@]}"; do
		out=$WORK/kustomize/$(tr '/ ' '__' <<<"$dir-$renderer").yaml
		# shellcheck disable=SC2086 # the renderer is a command with its arguments
		if ${RENDERERS[$renderer]} "$dir" >"$out" 2>"$WORK/err"; then
			if [[ -z $first ]]; then
				first=$out
				pass "$renderer: $dir"
			else
				# Same objects, whatever the order and formatting of the renderer.
				check "$renderer: $dir (the same objects)" bash -c '
					diff -u <("$1" -c "$2" "$3") <("$1" -c "$2" "$4")' _ "$PY/python" '
import sys, yaml, json
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
print("\n".join(sorted(json.dumps(d, sort_keys=True) for d in docs)))' "$first" "$out"
			fi
		else
			head -5 "$WORK/err" >"$WORK/out"
			fail "$renderer: $dir" "$WORK/out"
		fi
	done
done
