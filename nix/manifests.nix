# Rendered manifests: one file per overlay and the release asset tka-k8s.yaml
# (CRD, ServiceAccount, RBAC) that the deployment guide applies first.
{ runCommand
, kustomize
, src
}:
runCommand "tka-manifests" { nativeBuildInputs = [ kustomize ]; } ''
  mkdir -p $out
  for overlay in primary federated; do
    kustomize build ${src}/overlays/$overlay > $out/$overlay.yaml
  done
  kustomize build ${src}/install > $out/tka-k8s.yaml
''
