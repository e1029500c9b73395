# The packages of one system. Linux gets static musl binaries (pkgsStatic); macOS the CLI only, linked
# against the system libraries as macOS requires.
{ pkgs, info }:
let
  inherit (pkgs) lib;

  rustPlatform =
    if pkgs.stdenv.hostPlatform.isLinux then pkgs.pkgsStatic.rustPlatform else pkgs.rustPlatform;
  rustBinary = args: import ./rust-binary.nix ({ inherit lib rustPlatform info; } // args);
in
rec {
  tka-server = rustBinary { bin = "tka-server"; };

  # `ts-k8s-auth` keeps the upstream CLI's shell wrappers working (spec: cli.md §1).
  tka = rustBinary {
    bin = "tka";
    postInstall = ''
      ln -s tka $out/bin/ts-k8s-auth
    '';
  };

  tailscaled = import ./tailscaled.nix {
    inherit lib;
    inherit (pkgs) buildGoModule tailscale;
  };

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
