# The options of nixpkgs' `services.headscale` module (nixos/modules/services/networking/headscale.nix) that
# end up in headscale's configuration file: the same names, types and defaults, and the keys the module adds
# itself. The defaults matter: whatever a VM test leaves unset is what headscale gets (e.g. derp.urls).
{ config, lib, pkgs, ... }:
let
  cfg = config.services.headscale;
  yaml = pkgs.formats.yaml { };
  dataDir = "/var/lib/headscale";
  opt = type: default: lib.mkOption { inherit type default; };
  inherit (lib.types) bool enum listOf attrsOf nullOr path port str;
in
{
  options.services.headscale = {
    enable = lib.mkEnableOption "headscale";
    package = lib.mkOption { type = lib.types.package; default = pkgs.headscale; };
    user = opt str "headscale";
    group = opt str "headscale";
    address = opt str "127.0.0.1";
    port = opt port 8080;
    settings = lib.mkOption {
      default = { };
      type = lib.types.submodule {
        freeformType = yaml.type;
        options = {
          server_url = opt str "http://127.0.0.1:8080";
          noise.private_key_path = opt path "${dataDir}/noise_private.key";
          prefixes = {
            v4 = opt str "100.64.0.0/10";
            v6 = opt str "fd7a:115c:a1e0::/48";
            allocation = opt (enum [ "sequential" "random" ]) "sequential";
          };
          derp = {
            urls = opt (listOf str) [ "https://controlplane.tailscale.com/derpmap/default" ];
            paths = opt (listOf path) [ ];
            auto_update_enabled = opt bool true;
            update_frequency = opt str "24h";
            server.private_key_path = opt path "${dataDir}/derp_server_private.key";
          };
          ephemeral_node_inactivity_timeout = opt str "30m";
          database = {
            type = opt (enum [ "sqlite" "sqlite3" "postgres" ]) "sqlite";
            sqlite = {
              path = opt (nullOr str) "${dataDir}/db.sqlite";
              write_ahead_log = opt bool true;
            };
            postgres = {
              host = opt (nullOr str) null;
              port = opt (nullOr port) null;
              name = opt (nullOr str) null;
              user = opt (nullOr str) null;
              password_file = opt (nullOr path) null;
            };
          };
          log = {
            level = opt str "info";
            format = opt str "text";
          };
          dns = {
            magic_dns = opt bool true;
            base_domain = opt str "";
            nameservers.global = opt (listOf str) [ ];
            search_domains = opt (listOf str) [ ];
          };
          oidc = {
            issuer = opt str "";
            client_id = opt str "";
            client_secret_path = opt (nullOr str) null;
            scope = opt (listOf str) [ "openid" "profile" "email" ];
            extra_params = opt (attrsOf str) { };
            allowed_domains = opt (listOf str) [ ];
            allowed_users = opt (listOf str) [ ];
          };
          tls_letsencrypt_hostname = opt (nullOr str) "";
          tls_letsencrypt_challenge_type = opt (enum [ "TLS-ALPN-01" "HTTP-01" ]) "HTTP-01";
          tls_letsencrypt_listen = opt (nullOr str) ":http";
          tls_cert_path = opt (nullOr path) null;
          tls_key_path = opt (nullOr path) null;
          policy = {
            mode = opt (enum [ "file" "database" ]) "file";
            path = opt (nullOr path) null;
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = cfg.settings.dns.magic_dns -> cfg.settings.dns.base_domain != "";
      message = "dns.base_domain must be set when using MagicDNS";
    }];
    services.headscale.settings = {
      disable_check_updates = true;
      unix_socket = "/run/headscale/headscale.sock";
      listen_addr = lib.mkDefault "${cfg.address}:${toString cfg.port}";
      tls_letsencrypt_cache_dir = "${dataDir}/.cache";
    };
  };
}
