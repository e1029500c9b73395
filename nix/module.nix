# NixOS module `services.tka`: tka-server as a hardened systemd service, next to the
# host's tailscaled (default) or supervising its own.
{ self }:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.tka;
  yaml = pkgs.formats.yaml { };
  configFile = yaml.generate "tka-config.yaml" cfg.settings;

  setting = path: default: lib.attrByPath path default cfg.settings;
  tlsMode = setting [ "tls" "mode" ] "auto";
  # `auto` on port 443 without certificate files means certificates from tailscaled.
  tlsFromTailscale =
    tlsMode == "tailscale"
    || (tlsMode == "auto" && setting [ "tailscale" "port" ] 443 == 443 && setting [ "tls" "certFile" ] "" == "");

  system = pkgs.stdenv.hostPlatform.system;
in
{
  options.services.tka = {
    enable = lib.mkEnableOption "the TKA server (Tailscale Kubernetes Auth)";

    package = lib.mkOption {
      type = lib.types.package;
      default = self.packages.${system}.tka-server;
      defaultText = lib.literalExpression "tka.packages.\${pkgs.stdenv.hostPlatform.system}.tka-server";
      description = "The package providing `bin/tka-server`.";
    };

    settings = lib.mkOption {
      inherit (yaml) type;
      default = { };
      example = lib.literalExpression ''
        {
          tailscale.hostname = "tka";
          operator.clusterName = "prod-login-cluster";
          clusterInfo.apiEndpoint = "https://k8s.example.com:6443";
        }
      '';
      description = ''
        The server configuration (see the spec's config.md), written as YAML and passed with `--config`.
        The module sets `tailscale.stateDir` and `tailscale.runDir` to the unit's state and runtime
        directories and, with {option}`services.tka.useHostTailscaled`, `tailscale.socket`.
      '';
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = "/run/secrets/tka.env";
      description = ''
        Environment file for the unit, e.g. `TS_AUTHKEY=tskey-auth-…` when the server supervises its own
        tailscaled. It stays out of the Nix store.
      '';
    };

    kubeconfig = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = "Kubeconfig of an out-of-cluster server (sets `KUBECONFIG`).";
    };

    useHostTailscaled = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Use the host's tailscaled (`services.tailscale`) through its LocalAPI socket instead of supervising a
        tailscaled of its own. With certificates from Tailscale, tailscaled lets the `tka` user fetch them
        (`services.tailscale.permitCertUid`).
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      services.tka.settings.tailscale = {
        stateDir = lib.mkDefault "/var/lib/tka";
        runDir = lib.mkDefault "/run/tka";
      };

      users.users.tka = {
        isSystemUser = true;
        group = "tka";
        description = "TKA server";
      };
      users.groups.tka = { };

      systemd.services.tka = {
        description = "TKA server (Tailscale Kubernetes Auth)";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ lib.optional cfg.useHostTailscaled "tailscaled.service";
        requires = lib.optional cfg.useHostTailscaled "tailscaled.service";
        # Supervised mode starts `tailscaled` from PATH (tailscale.tailscaledPath).
        path = lib.optional (!cfg.useHostTailscaled) self.packages.${system}.tailscaled;
        environment = lib.optionalAttrs (cfg.kubeconfig != null) { KUBECONFIG = toString cfg.kubeconfig; };
        restartTriggers = [ configFile ];

        serviceConfig = {
          ExecStart = "${lib.getExe' cfg.package "tka-server"} serve --config ${configFile}";
          User = "tka";
          Group = "tka";
          StateDirectory = "tka";
          StateDirectoryMode = "0700";
          RuntimeDirectory = "tka";
          RuntimeDirectoryMode = "0700";

          # Port 443 on the tailnet address, nothing else.
          AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
          CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectControlGroups = true;
          RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
          RestrictNamespaces = true;
          LockPersonality = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" ];
          UMask = "0077";

          Restart = "on-failure";
          TimeoutStopSec = 30;
        } // lib.optionalAttrs (cfg.environmentFile != null) {
          EnvironmentFile = cfg.environmentFile;
        };
      };
    }

    (lib.mkIf cfg.useHostTailscaled {
      assertions = [{
        assertion = config.services.tailscale.enable;
        message = "services.tka.useHostTailscaled requires services.tailscale.enable";
      }];
      services.tka.settings.tailscale.socket = lib.mkDefault "/run/tailscale/tailscaled.sock";
      services.tailscale.permitCertUid = lib.mkIf tlsFromTailscale "tka";
    })
  ]);
}
