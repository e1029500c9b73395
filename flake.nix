{
  description = "TKA: short-lived Kubernetes credentials from tailnet identity";

  # The only input. Every extra input is another fetch that breaks offline builds. The branch
  # must carry headscale >= 0.29 for the VM tests; flake.lock is committed from a machine with network access.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      linuxSystems = [ "x86_64-linux" "aarch64-linux" ];
      darwinSystems = [ "x86_64-darwin" "aarch64-darwin" ];
      forSystems = systems: f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Build metadata, compiled in through TKA_BUILD_COMMIT / TKA_BUILD_DATE (src/lib.rs reads them with
      # option_env!). Both come from the flake source, so a build of one commit is reproducible.
      info = import ./nix/info.nix { inherit lib self; };

      # Everything one system's packages are made of; `pkgs` is nixpkgs for that system.
      packagesFor = pkgs: import ./nix/packages.nix { inherit pkgs info; };
    in
    {
      packages =
        forSystems linuxSystems
          (pkgs:
            let p = packagesFor pkgs; in {
              inherit (p) tka-server tka tailscaled image image-tarball manifests;
              default = p.tka;
            })
        // forSystems darwinSystems (pkgs:
          let p = packagesFor pkgs; in {
            inherit (p) tka;
            default = p.tka;
          });

      nixosModules.default = import ./nix/module.nix { inherit self; };

      checks = forSystems linuxSystems (pkgs:
        import ./nix/checks.nix {
          inherit pkgs info;
          packages = packagesFor pkgs;
        });

      devShells = forSystems (linuxSystems ++ darwinSystems) (pkgs: {
        default = import ./nix/devshell.nix { inherit pkgs; };
      });

      formatter = forSystems (linuxSystems ++ darwinSystems) (pkgs: pkgs.nixpkgs-fmt);
    };
}
