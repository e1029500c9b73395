# The appliance image: a static tka-server, unwrapped static tailscaled/tailscale, CA
# certificates, /etc/passwd and /etc/group with tka:65532 — and nothing else: no shell, no coreutils, no libc.
{ dockerTools
, runCommand
, info
, tka-server
, tailscaled
}:
let
  uid = 65532;

  # `/tka-server` at the root: the deployment guide's `command: ["/tka-server"]`.
  root = runCommand "tka-image-root" { } ''
    mkdir -p $out
    ln -s ${tka-server}/bin/tka-server $out/tka-server
  '';

  # root and nobody as dockerTools.fakeNss has them, plus the numeric non-root user the image runs as.
  nss = dockerTools.fakeNss.override {
    extraPasswdLines = [ "tka:x:${toString uid}:${toString uid}:tka:/tmp:/sbin/nologin" ];
    extraGroupLines = [ "tka:x:${toString uid}:" ];
  };

  args = {
    name = "ghcr.io/spechtlabs/tka";
    tag = info.version;
    # Fixed: the commit time of the source, never the build time.
    created = info.date;

    # /bin/tailscaled and /bin/tailscale come from the tailscaled package's bin/.
    contents = [ root tailscaled nss dockerTools.caCertificates ];

    # Runs under fakeroot in the image root. The process writes only to /tmp (tailscale.runDir) and the state
    # directory, so the image works with a read-only root filesystem.
    fakeRootCommands = ''
      mkdir -p tmp var/lib/tsnet etc/tka
      chmod 1777 tmp
      chown ${toString uid}:${toString uid} var/lib/tsnet
      chmod 0700 var/lib/tsnet
    '';

    config = {
      User = "${toString uid}:${toString uid}";
      Entrypoint = [ "/tka-server" ];
      Cmd = [ "serve" "--config" "/etc/tka/config.yaml" ];
      Env = [
        "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
        "PATH=/bin"
        "HOME=/tmp"
        # JSON logs even when run with a TTY.
        "TKA_LOG_FORMAT=json"
      ];
      WorkingDir = "/";
      ExposedPorts = {
        "443/tcp" = { };
        "8080/tcp" = { };
      };
      Labels = {
        "org.opencontainers.image.title" = "tka";
        "org.opencontainers.image.description" = "Tailscale Kubernetes Auth server";
        "org.opencontainers.image.source" = info.repository;
        "org.opencontainers.image.version" = info.version;
        "org.opencontainers.image.revision" = info.revision;
        "org.opencontainers.image.licenses" = info.license;
        "org.opencontainers.image.created" = info.date;
      };
    };
  };
in
{
  # `./result | podman load` or `./result > tka.tar`.
  image = dockerTools.streamLayeredImage args;
  # A gzip-compressed docker-archive for transfer (air-gapped installs).
  image-tarball = dockerTools.buildLayeredImage args;
  # What the image is made of, for the closure check.
  contents = args.contents;
}
