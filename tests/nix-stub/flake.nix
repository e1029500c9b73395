# A stand-in for nixpkgs that checks the structure of this repository's flake without building anything
# (spec: testing.md §8). Use it as
#
#   nix flake show  --override-input nixpkgs path:$PWD/tests/nix-stub
#   nix flake check --no-build --override-input nixpkgs path:$PWD/tests/nix-stub
#
# It has a small hand-written `lib` (only what the flake uses, with nixpkgs' semantics) and fake builders that
# validate their arguments the way nixpkgs would (exact argument sets where nixpkgs has them, paths that must
# exist) and return derivations whose builder always fails.
{
  description = "nixpkgs stub for structural checks of the tka flake";

  outputs = _:
    let
      lib = import ./lib.nix;
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems (system: import ./pkgs.nix { inherit lib system; });
    };
}
