# `nix develop`: everything the README's commands and the test scripts use.
{ pkgs }:
let
  inherit (pkgs) lib;
in
pkgs.mkShell {
  packages = with pkgs; [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    go
    kubectl
    kustomize
    skopeo
    headscale
    tailscale
    deadnix
    nixpkgs-fmt
    jq
    openssl
  ] ++ lib.optionals stdenv.hostPlatform.isLinux [ podman buildah umoci ];
}
