# `nix eval --json <flake>#checks.x86_64-linux --apply "$(cat this-file)"` against tests/nix-stub: what the
# offline checks need from every NixOS VM test, as the stub of runNixOSTest evaluated it. Per test: the
# rendered script, the machine names, whether type check and lint are on, the headscale settings of every
# node that enables headscale (files written with writeText become { stubFile; text; }), and the .drv
# paths of the manifests the script applies (found in the script's string context).
checks:
let
  inherit (builtins) attrNames filter getContext isAttrs isList listToAttrs map mapAttrs match;
  plain = v:
    if isAttrs v && v ? outPath then (if v ? text then { stubFile = v.name; inherit (v) text; } else v.outPath)
    else if isAttrs v then mapAttrs (_: plain) v
    else if isList v then map plain v
    else v;
  vmTests = filter (n: checks.${n} ? config) (attrNames checks);
  render = cfg: {
    inherit (cfg) name skipTypeCheck skipLint;
    machines = cfg.names;
    script = cfg.testScriptString;
    headscale = listToAttrs (map
      (node: {
        name = node;
        value = {
          version = cfg.nodes.${node}.services.headscale.package.version;
          settings = plain cfg.nodes.${node}.services.headscale.settings;
        };
      })
      (filter (node: cfg.nodes.${node}.services.headscale.enable) cfg.names));
    manifests = filter (drv: match ".*-manifests[.]yaml[.]drv" drv != null)
      (attrNames (getContext cfg.testScriptString));
  };
in
listToAttrs (map (n: { name = n; value = render checks.${n}.config; }) vmTests)
