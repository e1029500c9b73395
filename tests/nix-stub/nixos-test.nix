# `testers.runNixOSTest` as nixos/lib/testing has it, minus the VMs: the test module is evaluated with the
# real module system against the options of nixos/lib/testing (same names and types, so a misspelt or
# mistyped test option is an error), every node is evaluated as ./nixos/node.nix describes, and the
# testScript is rendered with the `nodes` argument the driver passes. The result carries what the static
# checks read (`config`): the rendered script, the machine names, the evaluated nodes.
{ lib, pkgs }:
module:
let
  inherit (lib) mkOption types;
  testOptions = {
    options = {
      name = mkOption { type = types.str; };
      nodes = mkOption { type = types.lazyAttrsOf types.deferredModule; default = { }; };
      defaults = mkOption { type = types.deferredModule; default = { }; };
      testScript = mkOption { type = types.either types.str (types.functionTo types.str); };
      skipLint = mkOption { type = types.bool; default = false; };
      skipTypeCheck = mkOption { type = types.bool; default = false; };
      enableOCR = mkOption { type = types.bool; default = false; };
      globalTimeout = mkOption { type = types.int; default = 3600; };
      extraPythonPackages = mkOption { type = types.functionTo (types.listOf types.package); default = _: [ ]; };
      extraDriverArgs = mkOption { type = types.listOf types.str; default = [ ]; };
      meta = mkOption { type = types.lazyAttrsOf types.raw; default = { }; };
      passthru = mkOption { type = types.lazyAttrsOf types.raw; default = { }; };
      interactive = mkOption { type = types.deferredModule; default = { }; };
    };
  };
  test = (lib.evalModules { modules = [ testOptions module ]; }).config;

  names = builtins.attrNames test.nodes;
  nodes = lib.listToAttrs (lib.imap1
    (i: name: {
      inherit name;
      value = (lib.evalModules {
        modules = [
          ./nixos/node.nix
          test.defaults
          test.nodes.${name}
          {
            _module.args.pkgs = pkgs;
            networking.hostName = lib.mkDefault name;
            networking.primaryIPAddress = lib.mkDefault "192.168.1.${toString i}";
          }
        ];
      }).config;
    })
    names);
  # The driver passes nodes whose attributes are the machines' configs, also reachable as `.config`.
  nodesArg = lib.mapAttrs (_: c: c // { config = c; }) nodes;
  testScriptString = if lib.isFunction test.testScript then test.testScript { nodes = nodesArg; } else test.testScript;
  failedAssertions = lib.concatMap
    (name: map (a: "${name}: ${a.message}") (lib.filter (a: !a.assertion) nodes.${name}.assertions))
    names;
in
assert lib.assertMsg (failedAssertions == [ ])
  "runNixOSTest ${test.name}: failed assertions:\n${lib.concatStringsSep "\n" failedAssertions}";
pkgs.runCommand "vm-test-run-${test.name}"
{
  testScript = testScriptString;
  # A VM test depends on every node's system, so evaluating it forces each node's whole configuration
  # (packages included), as building the real test would.
  nodes = builtins.toJSON (lib.mapAttrs (_: c: removeAttrs c [ "_module" ]) nodes);
  passthru.config = {
    inherit (test) name skipLint skipTypeCheck;
    inherit nodes names testScriptString;
  };
} "stub"
