# The packages of one system. Linux gets static musl binaries (pkgsStatic); macOS the CLI only, linked
# against the system libraries as macOS requires.
{ pkgs, info }:
let
  inherit (pkgs) lib;

  rustPlatform =
    if pkgs.stdenv.hostPlatform.isLinux then pkgs.pkgsStatic.rustPlatform else pkgs.rustPlatform;
  binaries = import ./binaries.nix {
    inherit lib info rustPlatform;
    inherit (pkgs) stdenv runCommand;
  };
in
rec {
  inherit (binaries) tka tka-server;

  tailscaled = import ./tailscaled.nix { inherit (pkgs) tailscale; };

  images = import ./image.nix {
    inherit info tka-server tailscaled;
    inherit (pkgs) dockerTools runCommand;
  };
  inherit (images) image image-tarball;

  manifests = import ./manifests.nix {
    inherit (pkgs) runCommand kustomize;
    src = info.sources.kustomize;
  };
}
