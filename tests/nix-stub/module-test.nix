# Evaluates nix/module.nix against the stub (no module system): its options and, with mkIf/mkMerge/mkDefault
# resolved by hand, the systemd unit it defines in both tailscaled modes. Prints the list of failures.
#
#   nix-instantiate --eval --strict --json tests/nix-stub/module-test.nix     # => []
let
  lib = import ./lib.nix;
  pkgs = import ./pkgs.nix { inherit lib; system = "x86_64-linux"; };
  self.packages.x86_64-linux = {
    tka-server = pkgs.runCommand "tka-server" { } "";
    tailscaled = pkgs.runCommand "tailscaled" { } "";
  };
  module = import ../../nix/module.nix { inherit self; };

  # The value a definition has after mkIf/mkMerge/mkDefault, as the module system would compute it for
  # a single definition.
  resolve = v:
    if builtins.isAttrs v && (v._type or null) == "if" then (if v.condition then resolve v.content else null)
    else if builtins.isAttrs v && (v._type or null) == "override" then resolve v.content
    else if builtins.isAttrs v && (v._type or null) == "merge"
    then lib.foldl' (acc: c: let r = resolve c; in if r == null then acc else lib.recursiveUpdate acc r) { } v.contents
    else if builtins.isAttrs v && !(v ? outPath) then
      lib.foldl' (acc: n: let r = resolve v.${n}; in if r == null then acc else acc // { ${n} = r; }) { } (builtins.attrNames v)
    else v;

  evalWith = tka: tailscale:
    let
      m = module {
        inherit lib pkgs;
        config.services = {
          tka = {
            enable = true;
            package = self.packages.x86_64-linux.tka-server;
            settings = { };
            environmentFile = "/run/secrets/tka.env";
            kubeconfig = null;
          } // tka;
          inherit tailscale;
        };
      };
    in
    { inherit (m) options; config = resolve m.config; };

  host = evalWith { useHostTailscaled = true; } { enable = true; };
  supervised = evalWith { useHostTailscaled = false; } { enable = false; };
  unit = host.config.systemd.services.tka;
  sc = unit.serviceConfig;

  checks = {
    "options: enable package settings environmentFile kubeconfig useHostTailscaled" =
      builtins.attrNames host.options.services.tka
      == [ "enable" "environmentFile" "kubeconfig" "package" "settings" "useHostTailscaled" ];
    "useHostTailscaled defaults to true" = host.options.services.tka.useHostTailscaled.default;
    "static user and group tka" = host.config.users.users.tka.isSystemUser && host.config.users.groups ? tka;
    "ExecStart runs serve with the rendered config" =
      builtins.match ".*/bin/tka-server serve --config .*tka-config.yaml" sc.ExecStart != null;
    "User/Group tka" = sc.User == "tka" && sc.Group == "tka";
    "StateDirectory and RuntimeDirectory tka" = sc.StateDirectory == "tka" && sc.RuntimeDirectory == "tka";
    "CAP_NET_BIND_SERVICE only" =
      sc.AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ] && sc.CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ];
    "NoNewPrivileges" = sc.NoNewPrivileges;
    "ProtectSystem strict, ProtectHome, PrivateTmp" = sc.ProtectSystem == "strict" && sc.ProtectHome && sc.PrivateTmp;
    "RestrictAddressFamilies" = sc.RestrictAddressFamilies == [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
    "SystemCallFilter @system-service" = sc.SystemCallFilter == [ "@system-service" ];
    "Restart on-failure, TimeoutStopSec 30" = sc.Restart == "on-failure" && sc.TimeoutStopSec == 30;
    "EnvironmentFile" = sc.EnvironmentFile == "/run/secrets/tka.env";
    "state and run dirs in settings" =
      host.config.services.tka.settings.tailscale.stateDir == "/var/lib/tka"
      && host.config.services.tka.settings.tailscale.runDir == "/run/tka";
    "host mode: socket, ordering, permitCertUid" =
      host.config.services.tka.settings.tailscale.socket == "/run/tailscale/tailscaled.sock"
      && lib.elem "tailscaled.service" unit.after
      && host.config.services.tailscale.permitCertUid == "tka";
    "host mode: assertion on services.tailscale.enable" =
      builtins.all (a: a.assertion) host.config.assertions;
    "supervised mode: no socket, tailscaled on PATH, assertion not applied" =
      !(supervised.config.services.tka.settings.tailscale ? socket)
      && supervised.config.systemd.services.tka.path == [ self.packages.x86_64-linux.tailscaled ]
      && !(supervised.config ? assertions);
  };
in
builtins.filter (name: !checks.${name}) (builtins.attrNames checks)
