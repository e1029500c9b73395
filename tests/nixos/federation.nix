# NixOS VM test of federation: headscale, two k3s clusters each running
# the Nix-built image (the primary `tka` and a member `tka-west` configured like the deployment guide's
# federated ConfigMap), and a client laptop. One `tka login` at the primary gives contexts for both clusters;
# a member that is down is named and the login exits 6; logout at the primary revokes on both.
#
#   nix build .#checks.x86_64-linux.vm-federation            (needs KVM and the binary cache)
#   nix run .#checks.x86_64-linux.vm-federation.driverInteractive
{ pkgs
, tka
, image
, kustomizeSrc
}:
let

  tailnet = "tailnet.test";
  capName = "specht-labs.de/cap/tka";
  memberCluster = "prod-west-cluster"; # the guide's member

  # headscale >= 0.29 (grants with app capabilities): nix/checks.nix skips this test on an older nixpkgs.
  inherit (pkgs) headscale;

  # The test CA: headscale's certificate and both tka servers' certificates for their MagicDNS names. Both
  # servers trust it (SSL_CERT_FILE in the test overlay), so the primary and the member verify each other.
  pki = pkgs.runCommand "tka-vm-federation-pki" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir -p $out
    cd $out
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj "/CN=tka VM test CA" -keyout ca.key -out ca.crt \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    issue() {
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=$2" -keyout "$1.key" -out "$1.csr"
      printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' "$2" > "$1.ext"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "$3" -days 3650 \
        -extfile "$1.ext" -out "$1.crt"
      rm "$1.csr" "$1.ext"
    }
    issue headscale headscale 2
    issue tka tka.${tailnet} 3
    issue tka-west tka-west.${tailnet} 4
  '';

  # Users reach the primary only; members and primary reach each other on 443. alice's rule
  # names clusters explicitly (rules without `clusters` never apply to members).
  policy = pkgs.writeText "policy.json" (builtins.toJSON {
    tagOwners = {
      "tag:tka" = [ "alice@" ];
      "tag:tka-member" = [ "alice@" ];
    };
    grants = [
      { src = [ "alice@" ]; dst = [ "tag:tka" ]; ip = [ "443" ]; }
      { src = [ "tag:tka-member" ]; dst = [ "tag:tka" ]; ip = [ "443" ]; }
      { src = [ "tag:tka" ]; dst = [ "tag:tka-member" ]; ip = [ "443" ]; }
      {
        src = [ "alice@" ];
        dst = [ "tag:tka" ];
        app.${capName} = [{ role = "view"; period = "1h"; clusters = [ "test-cluster" memberCluster ]; }];
      }
    ];
  });

  # The overlays/test configuration plus the primary's member admission.
  primaryConfig = pkgs.writeText "config.yaml" ''
    tailscale:
      hostname: tka
      port: 443
      capName: ${capName}
      controlURL: https://headscale
    tls:
      mode: files
      certFile: /etc/tka-tls/tls.crt
      keyFile: /etc/tka-tls/tls.key
    operator:
      namespace: tka-system
      clusterName: test-cluster
      allowedRoles: [view, edit, admin]
    federation:
      memberTags: [tag:tka-member]
      heartbeatInterval: 5s
  '';

  # The deployment guide's federated ConfigMap on the test overlay.
  memberConfig = pkgs.writeText "config.yaml" ''
    tailscale:
      hostname: tka-west
      port: 443
      tailnet: ${tailnet}
      capName: ${capName}
      controlURL: https://headscale
    tls:
      mode: files
      certFile: /etc/tka-tls/tls.crt
      keyFile: /etc/tka-tls/tls.key
    operator:
      namespace: tka-system
      clusterName: ${memberCluster}
      contextPrefix: west-
      userPrefix: west-user-
      allowedRoles: [view, edit, admin]
    federation:
      loginServer: https://tka.${tailnet}
      heartbeatInterval: 5s
  '';

  pauseImage = pkgs.dockerTools.streamLayeredImage {
    name = "test.local/pause";
    tag = "local";
    contents = [ pkgs.tini pkgs.coreutils ];
    config.Entrypoint = [ "/bin/tini" "--" "/bin/sleep" "inf" ];
  };

  # overlays/test with this server's configuration, headscale's address and the image built by this flake.
  manifestsFor = config: headscaleIP: pkgs.runCommand "tka-vm-federation-manifests.yaml"
    {
      nativeBuildInputs = [ pkgs.kustomize ];
    } ''
    cp -r ${kustomizeSrc} kustomize
    chmod -R u+w kustomize
    mkdir kustomize/vm-test
    cp ${config} kustomize/vm-test/config.yaml
    cat > kustomize/vm-test/kustomization.yaml <<'EOF'
    apiVersion: kustomize.config.k8s.io/v1beta1
    kind: Kustomization
    resources:
    - ../overlays/test
    images:
    - name: ghcr.io/spechtlabs/tka
      newName: ${image.imageName}
      newTag: "${image.imageTag}"
    configMapGenerator:
    - name: tka-config
      namespace: tka-system
      behavior: replace
      files:
      - config.yaml
      options:
        disableNameSuffixHash: true
    patches:
    - path: host-aliases.yaml
    EOF
    cat > kustomize/vm-test/host-aliases.yaml <<'EOF'
    apiVersion: apps/v1
    kind: Deployment
    metadata:
      name: tka-server
      namespace: tka-system
    spec:
      template:
        spec:
          hostAliases:
          - ip: "${headscaleIP}"
            hostnames: [headscale]
    EOF
    kustomize build kustomize/vm-test > $out
  '';

  # kube-public/cluster-info as kubeadm writes it, with this node's name as the API endpoint.
  publishClusterInfo = host: pkgs.writeShellScript "publish-cluster-info-${host}" ''
    set -eu
    ca=$(base64 -w0 /var/lib/rancher/k3s/server/tls/server-ca.crt)
    cat > /tmp/cluster-info.kubeconfig <<EOF
    apiVersion: v1
    kind: Config
    clusters:
    - name: ""
      cluster:
        server: https://${host}:6443
        certificate-authority-data: $ca
    EOF
    k3s kubectl -n kube-public create configmap cluster-info --from-file=kubeconfig=/tmp/cluster-info.kubeconfig
  '';

  k3sNode = host: {
    virtualisation = {
      cores = 2;
      memorySize = 2048;
      diskSize = 4096;
    };
    services.k3s = {
      enable = true;
      role = "server";
      extraFlags = [
        "--disable=traefik,metrics-server,servicelb,coredns,local-storage"
        "--tls-san=${host}"
        "--pause-image=test.local/pause:local"
      ];
    };
    networking.firewall.enable = false;
    environment.systemPackages = [ pkgs.jq ];
  };
in
pkgs.testers.runNixOSTest {
  name = "tka-federation";

  nodes = {
    headscale = {
      services.headscale = {
        enable = true;
        package = headscale;
        port = 8080;
        settings = {
          server_url = "https://headscale";
          prefixes = {
            v4 = "100.64.0.0/10";
            v6 = "fd7a:115c:a1e0::/48";
          };
          # The embedded DERP server only: the VMs have no network, and headscale >= 0.29 does not start
          # when the default DERP map URL cannot be fetched.
          derp = {
            urls = [ ];
            server = {
              enabled = true;
              region_id = 999;
              stun_listen_addr = "0.0.0.0:3478";
            };
          };
          dns = {
            magic_dns = true;
            base_domain = tailnet;
            override_local_dns = false;
            nameservers.global = [ ];
          };
          policy = {
            mode = "file";
            path = policy;
          };
          logtail.enabled = false;
        };
      };
      services.nginx = {
        enable = true;
        virtualHosts.headscale = {
          onlySSL = true;
          sslCertificate = "${pki}/headscale.crt";
          sslCertificateKey = "${pki}/headscale.key";
          locations."/" = {
            proxyPass = "http://127.0.0.1:8080";
            proxyWebsockets = true;
          };
        };
      };
      networking.firewall = {
        allowedTCPPorts = [ 443 ];
        allowedUDPPorts = [ 3478 ];
      };
      environment.systemPackages = [ headscale pkgs.jq ];
    };

    k8s = k3sNode "k8s";
    west = k3sNode "west";

    client = {
      services.tailscale.enable = true;
      services.resolved.enable = true; # MagicDNS for tka.${tailnet}
      networking.firewall.checkReversePath = "loose";
      security.pki.certificateFiles = [ "${pki}/ca.crt" ];
      environment.systemPackages = [ tka pkgs.kubectl pkgs.jq pkgs.curl ];
    };
  };

  testScript = { nodes, ... }: ''
    import time

    def dump(machine, command):
        print(machine.execute(command + " 2>&1")[1])

    start_all()

    with subtest("headscale is up with user alice"):
        headscale.wait_for_unit("headscale.service")
        headscale.wait_for_unit("nginx.service")
        headscale.wait_for_open_port(443)
        headscale.succeed("headscale users create alice")

    def authkey(user, tags=""):
        uid = headscale.succeed(
            f"headscale users list -o json | jq -er '.[] | select(.name == \"{user}\") | .id'"
        ).strip()
        extra = f" --tags {tags}" if tags else ""
        return headscale.succeed(
            f"headscale preauthkeys create --user {uid} --reusable --expiration 1h -o json{extra} | jq -er .key"
        ).strip()

    def deploy(machine, host, manifests, key, cert):
        machine.wait_for_unit("k3s.service")
        machine.wait_until_succeeds("k3s kubectl get --raw /readyz", timeout=300)
        machine.succeed("${pauseImage} | k3s ctr image import -")
        machine.succeed("${image} | k3s ctr image import -")
        machine.succeed(f"{host}")
        machine.succeed(f"k3s kubectl apply -f {manifests}")
        machine.wait_until_succeeds("k3s kubectl get crd tkasignins.tka.specht-labs.de")
        machine.succeed(
            f"k3s kubectl -n tka-system create secret generic tka-tailscale --from-literal=TS_AUTHKEY={key}",
            "k3s kubectl -n tka-system create secret generic tka-tls"
            f" --from-file=tls.crt=${pki}/{cert}.crt --from-file=tls.key=${pki}/{cert}.key"
            " --from-file=ca.crt=${pki}/ca.crt",
        )
        try:
            machine.wait_until_succeeds(
                "k3s kubectl -n tka-system rollout status deployment/tka-server --timeout=10s", timeout=600
            )
        except Exception:
            dump(machine, "k3s kubectl -n tka-system describe pods")
            dump(machine, "k3s kubectl -n tka-system logs deployment/tka-server")
            raise

    with subtest("the primary and the member run on their own k3s clusters"):
        deploy(k8s, "${publishClusterInfo "k8s"}",
               "${manifestsFor primaryConfig nodes.headscale.networking.primaryIPAddress}",
               authkey("alice", "tag:tka"), "tka")
        deploy(west, "${publishClusterInfo "west"}",
               "${manifestsFor memberConfig nodes.headscale.networking.primaryIPAddress}",
               authkey("alice", "tag:tka-member"), "tka-west")

    with subtest("the client joins the tailnet as alice"):
        client.wait_for_unit("tailscaled.service")
        client.succeed(
            f"tailscale up --login-server https://headscale --auth-key {authkey('alice')} --hostname laptop"
        )
        client.wait_until_succeeds("getent hosts tka.${tailnet}", timeout=120)

    tka = "TKA_TAILSCALE_TAILNET=${tailnet} tka"

    with subtest("the member registers; tka get clusters lists both"):
        try:
            client.wait_until_succeeds(f"{tka} get clusters | grep -E '^${memberCluster} +healthy'", timeout=180)
        except Exception:
            dump(k8s, "k3s kubectl -n tka-system logs deployment/tka-server")
            dump(west, "k3s kubectl -n tka-system logs deployment/tka-server")
            raise
        print(client.succeed(f"{tka} get clusters"))

    with subtest("one login at the primary gives a working context for each cluster"):
        env = client.succeed(f"{tka} login --quiet").strip()
        assert env.startswith("export KUBECONFIG="), env
        contexts = client.succeed(f"{env}; kubectl config get-contexts -o name").split()
        west_ctx = [c for c in contexts if c.startswith("west-")]
        assert len(contexts) == 2 and len(west_ctx) == 1, contexts
        whoami = client.succeed(f"{env}; kubectl auth whoami")
        assert "tka-user-alice" in whoami, whoami
        whoami = client.succeed(f"{env}; kubectl --context {west_ctx[0]} auth whoami")
        assert "west-user-alice" in whoami, whoami
        client.succeed(f"{env}; kubectl --context {west_ctx[0]} get pods -A")
        signins = west.succeed("k3s kubectl get signin -n tka-system -o json")
        assert '"kind": "federation"' in signins or '"kind":"federation"' in signins, signins

    with subtest("a member that is down is named and the login exits 6"):
        west.succeed("k3s kubectl -n tka-system scale deployment/tka-server --replicas=0")
        west.wait_until_succeeds(
            "test -z \"$(k3s kubectl -n tka-system get pods -l app=tka-server -o name)\"",
            timeout=120,
        )
        code, out = client.execute(f"{tka} login 2>&1")
        print(out)
        assert code == 6, f"login with the member down exited {code}, expected 6"
        assert "${memberCluster}" in out, out
        west.succeed("k3s kubectl -n tka-system scale deployment/tka-server --replicas=1")
        client.wait_until_succeeds(f"{tka} get clusters | grep -E '^${memberCluster} +healthy'", timeout=300)

    with subtest("logout at the primary revokes on both clusters"):
        env = client.succeed(f"{tka} login --quiet").strip()
        token = lambda ctx: client.succeed(
            f"{env}; kubectl config view --raw --minify --context {ctx} -o jsonpath='{{.users[0].user.token}}'"
        ).strip()
        contexts = client.succeed(f"{env}; kubectl config get-contexts -o name").split()
        tokens = {c: token(c) for c in contexts}
        assert len(tokens) == 2 and all(tokens.values()), tokens
        time.sleep(11)  # let kube-apiserver's 10 s token cache age out (README, "Revocation latency")
        client.succeed(f"{tka} logout")
        for ctx, tok in tokens.items():
            host = "west" if ctx.startswith("west-") else "k8s"
            client.wait_until_succeeds(
                f"test \"$(curl -ks -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {tok}' https://{host}:6443/api)\" = 401",
                timeout=15,
            )
  '';
}
