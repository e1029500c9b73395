# A NixOS machine as far as the offline checks look at one: the options modelled in this directory are
# declared with nixpkgs' types and defaults, every other option a node sets is kept as it is written
# (freeform), so the modelled parts are checked exactly and the rest is still evaluated.
{ lib, ... }:
{
  imports = [ ./headscale.nix ];
  freeformType = lib.types.lazyAttrsOf lib.types.anything;
  options = {
    assertions = lib.mkOption {
      type = lib.types.listOf lib.types.unspecified;
      default = [ ];
    };
    networking.hostName = lib.mkOption { type = lib.types.str; };
    # nixos/lib/testing/network.nix: 192.168.<vlan>.<position of the node among the sorted node names>.
    networking.primaryIPAddress = lib.mkOption { type = lib.types.str; };
  };
}
