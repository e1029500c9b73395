# A stand-in for nixpkgs that checks this repository's flake without building anything. `lib` is nixpkgs' real
# library (the input below, overridden with the local copy by tests/static/check.sh); only the package
# functions are stubs (pkgs.nix): they check their arguments against the signatures of the real functions
# and return derivations that evaluate (`nix flake check --no-build`) but whose builder always fails.
#
#   nix flake check --no-build --all-systems \
#     --override-input nixpkgs path:$PWD/tests/nix-stub \
#     --override-input nixpkgs/nixpkgs-lib path:$PWD/../shared/nixpkgs-lib
{
  description = "nixpkgs stub (real lib, stub packages) for offline checks of the tka flake";

  # Never fetched in the checks: always overridden with a local copy of the same repository.
  inputs.nixpkgs-lib.url = "github:nix-community/nixpkgs.lib";

  outputs = { nixpkgs-lib, ... }:
    let
      inherit (nixpkgs-lib) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      # Test knobs (tests/static/check.sh writes this file into a copy of the stub), e.g. an older headscale.
      knobs = if builtins.pathExists ./knobs.json then builtins.fromJSON (builtins.readFile ./knobs.json) else { };
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system knobs; });
    };
}
