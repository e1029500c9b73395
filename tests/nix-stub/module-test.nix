# nix/module.nix (`services.tka`) under the real module system: lib.evalModules with the NixOS options the
# module sets, declared with the types nixpkgs gives them (nixos/modules/config/users-groups.nix,
# nixos/lib/systemd-unit-options.nix, services/networking/tailscale.nix, misc/assertions.nix), so a wrong
# type, a misspelt option or a priority conflict is the same error it would be on NixOS. Returns JSON:
# the failed expectations (empty when all hold) and the generated config of each tailscaled mode, which
# tests/static/check.sh passes through `tka-server check`.
#
#   nix eval --json --impure --expr 'import tests/nix-stub/module-test.nix { lib = import <nixpkgs-lib>/lib; }'
{ lib }:
let
  pkgs = import ./pkgs.nix { inherit lib; system = "x86_64-linux"; };
  self.packages.x86_64-linux = {
    tka-server = pkgs.runCommand "tka-server" { meta.mainProgram = "tka-server"; } "stub";
    tailscaled = pkgs.runCommand "tailscaled" { } "stub";
  };

  inherit (lib) mkOption types;
  # systemd-unit-options.nix: a unit setting is an atom or a list of atoms.
  atom = types.oneOf [ types.bool types.int types.float types.str types.path types.package ];
  unitOption = types.either atom (types.listOf atom);
  strList = mkOption { type = types.listOf types.str; default = [ ]; };
  nixos = {
    options = {
      assertions = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      users.users = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            isSystemUser = mkOption { type = types.bool; default = false; };
            group = mkOption { type = types.str; default = ""; };
            description = mkOption { type = types.str; default = ""; };
          };
        });
      };
      users.groups = mkOption { type = types.attrsOf (types.submodule { }); default = { }; };
      services.tailscale = {
        enable = mkOption { type = types.bool; default = false; };
        permitCertUid = mkOption { type = types.nullOr types.nonEmptyStr; default = null; };
      };
      systemd.services = mkOption {
        default = { };
        type = types.attrsOf (types.submodule {
          options = {
            description = mkOption { type = types.singleLineStr; default = ""; };
            wantedBy = strList;
            wants = strList;
            after = strList;
            requires = strList;
            path = mkOption { type = types.listOf (types.oneOf [ types.package types.str ]); default = [ ]; };
            environment = mkOption {
              type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]));
              default = { };
            };
            restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
            serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
          };
        });
      };
    };
  };

  eval = extra: (lib.evalModules {
    modules = [
      nixos
      (import ../../nix/module.nix { inherit self; })
      { _module.args.pkgs = pkgs; }
      extra
    ];
  }).config;

  # The module's documented example, as a user would write it.
  example = {
    tailscale.hostname = "tka";
    operator.clusterName = "prod-login-cluster";
    clusterInfo.apiEndpoint = "https://k8s.example.com:6443";
  };
  host = eval {
    services.tka = {
      enable = true;
      settings = example;
      environmentFile = "/run/secrets/tka.env";
    };
    services.tailscale.enable = true;
  };
  supervised = eval {
    services.tka = {
      enable = true;
      settings = example;
      useHostTailscaled = false;
    };
  };
  off = eval { };

  unit = host.systemd.services.tka;
  sc = unit.serviceConfig;
  # The unit restarts on changes of its config file: that derivation is the rendered YAML (its builder's
  # input is the value as JSON, as nixpkgs' formats.yaml passes it).
  configOf = c: builtins.fromJSON (builtins.head c.systemd.services.tka.restartTriggers).value;
  failedAssertions = c: lib.filter (a: !a.assertion) c.assertions;

  expectations = {
    "ExecStart runs serve with the rendered config" =
      sc.ExecStart == "${self.packages.x86_64-linux.tka-server}/bin/tka-server serve --config ${builtins.head unit.restartTriggers}";
    "User/Group tka, a system user" =
      sc.User == "tka" && sc.Group == "tka" && host.users.users.tka.isSystemUser && host.users.groups ? tka;
    "StateDirectory and RuntimeDirectory tka, 0700" =
      sc.StateDirectory == "tka" && sc.RuntimeDirectory == "tka" && sc.StateDirectoryMode == "0700";
    "CAP_NET_BIND_SERVICE only" =
      sc.AmbientCapabilities == [ "CAP_NET_BIND_SERVICE" ] && sc.CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ];
    "hardening" = sc.NoNewPrivileges && sc.ProtectSystem == "strict" && sc.ProtectHome && sc.PrivateTmp
      && sc.SystemCallFilter == [ "@system-service" ] && sc.UMask == "0077"
      && sc.RestrictAddressFamilies == [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
    "Restart on-failure, TimeoutStopSec 30" = sc.Restart == "on-failure" && sc.TimeoutStopSec == 30;
    "EnvironmentFile only when set" =
      sc.EnvironmentFile == "/run/secrets/tka.env" && !(supervised.systemd.services.tka.serviceConfig ? EnvironmentFile);
    "state and run dirs in settings" =
      host.services.tka.settings.tailscale.stateDir or null == "/var/lib/tka"
      && host.services.tka.settings.tailscale.runDir or null == "/run/tka";
    "host mode: socket, ordering, permitCertUid" =
      host.services.tka.settings.tailscale.socket or null == "/run/tailscale/tailscaled.sock"
      && lib.elem "tailscaled.service" unit.after && lib.elem "tailscaled.service" unit.requires
      && host.services.tailscale.permitCertUid == "tka";
    "host mode: the assertion holds with services.tailscale.enable" = failedAssertions host == [ ];
    "host mode without services.tailscale: the assertion fails" =
      map (a: a.message) (failedAssertions (eval { services.tka.enable = true; }))
      == [ "services.tka.useHostTailscaled requires services.tailscale.enable" ];
    "supervised mode: no socket, tailscaled on PATH, no tailscaled dependency" =
      !(supervised.services.tka.settings.tailscale ? socket)
      && supervised.systemd.services.tka.path == [ self.packages.x86_64-linux.tailscaled ]
      && supervised.systemd.services.tka.requires == [ ]
      && failedAssertions supervised == [ ];
    "the generated config is the settings" =
      configOf host == host.services.tka.settings && configOf supervised == supervised.services.tka.settings;
    "disabled: no unit, no user" = off.systemd.services == { } && off.users.users == { };
  };
in
{
  failed = lib.filter (name: !expectations.${name}) (builtins.attrNames expectations);
  configs = {
    host = configOf host;
    supervised = configOf supervised;
  };
}
