# NixOS VM test of the whole login flow: a headscale control server, a k3s cluster running
# the Nix-built image with the `test` overlay, and a client laptop with tailscale, tka and kubectl.
#
#   nix build .#checks.x86_64-linux.vm-login-flow            (needs KVM and the binary cache)
#   nix run .#checks.x86_64-linux.vm-login-flow.driverInteractive
{ pkgs
, tka
, image
, kustomizeSrc
}:
let

  tailnet = "tailnet.test";
  capName = "specht-labs.de/cap/tka";
  clusterName = "test-cluster"; # overlays/test/config.yaml

  # headscale >= 0.29 (grants with app capabilities): nix/checks.nix skips this test on an older nixpkgs.
  inherit (pkgs) headscale;

  # The test CA: headscale's certificate (behind nginx) and the tka server's certificate for its MagicDNS name.
  pki = pkgs.runCommand "tka-vm-test-pki" { nativeBuildInputs = [ pkgs.openssl ]; } ''
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
  '';

  # The spec's example grants, adapted: alice@ may log in with `view`, bob@ reaches the server but has no grant.
  policy = pkgs.writeText "policy.json" (builtins.toJSON {
    tagOwners."tag:tka" = [ "alice@" ];
    grants = [
      { src = [ "alice@" "bob@" ]; dst = [ "tag:tka" ]; ip = [ "443" ]; }
      {
        src = [ "alice@" ];
        dst = [ "tag:tka" ];
        app.${capName} = [{ role = "view"; period = "1h"; priority = 100; }];
      }
    ];
  });

  # k3s runs pods without a registry: its pause image is built here and imported like the tka image.
  pauseImage = pkgs.dockerTools.streamLayeredImage {
    name = "test.local/pause";
    tag = "local";
    contents = [ pkgs.tini pkgs.coreutils ];
    config.Entrypoint = [ "/bin/tini" "--" "/bin/sleep" "inf" ];
  };

  # overlays/test plus what only this test knows: headscale's address (there is no cluster DNS: coredns is
  # disabled) and the tag of the image built by this flake.
  manifestsFor = headscaleIP: pkgs.runCommand "tka-vm-test-manifests.yaml"
    {
      nativeBuildInputs = [ pkgs.kustomize ];
    } ''
    cp -r ${kustomizeSrc} kustomize
    chmod -R u+w kustomize
    mkdir kustomize/vm-test
    cat > kustomize/vm-test/kustomization.yaml <<'EOF'
    apiVersion: kustomize.config.k8s.io/v1beta1
    kind: Kustomization
    resources:
    - ../overlays/test
    images:
    - name: ghcr.io/spechtlabs/tka
      newName: ${image.imageName}
      newTag: "${image.imageTag}"
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

  # kube-public/cluster-info as kubeadm writes it: the server hands this endpoint and CA to its clients.
  publishClusterInfo = pkgs.writeShellScript "publish-cluster-info" ''
    set -eu
    ca=$(base64 -w0 /var/lib/rancher/k3s/server/tls/server-ca.crt)
    cat > /tmp/cluster-info.kubeconfig <<EOF
    apiVersion: v1
    kind: Config
    clusters:
    - name: ""
      cluster:
        server: https://k8s:6443
        certificate-authority-data: $ca
    EOF
    k3s kubectl -n kube-public create configmap cluster-info --from-file=kubeconfig=/tmp/cluster-info.kubeconfig
  '';

  # `tka credential …` exactly as kubectl would run it from the exec kubeconfig; prints its exit code.
  runExecPlugin = pkgs.writeShellScript "run-exec-plugin" ''
    set -u
    args=$(kubectl --kubeconfig "$1" config view -o json | jq -r '.users[0].user.exec.args | @sh')
    eval "set -- $args"
    tka "$@" > /dev/null
    echo "$?"
  '';
in
pkgs.testers.runNixOSTest {
  name = "tka-login-flow";

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

    k8s = {
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
          "--tls-san=k8s"
          "--pause-image=test.local/pause:local"
        ];
      };
      # The client reaches the apiserver directly (tka does not proxy); pods reach headscale.
      networking.firewall.enable = false;
      environment.systemPackages = [ pkgs.jq ];
    };

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

    with subtest("headscale is up with users alice and bob"):
        headscale.wait_for_unit("headscale.service")
        headscale.wait_for_unit("nginx.service")
        headscale.wait_for_open_port(443)
        headscale.succeed("headscale users create alice", "headscale users create bob")

    def authkey(user, tags=""):
        uid = headscale.succeed(
            f"headscale users list -o json | jq -er '.[] | select(.name == \"{user}\") | .id'"
        ).strip()
        extra = f" --tags {tags}" if tags else ""
        return headscale.succeed(
            f"headscale preauthkeys create --user {uid} --reusable --expiration 1h -o json{extra} | jq -er .key"
        ).strip()

    server_key = authkey("alice", "tag:tka")
    alice_key = authkey("alice")
    bob_key = authkey("bob")

    with subtest("k3s runs the tka image with the test overlay"):
        k8s.wait_for_unit("k3s.service")
        k8s.wait_until_succeeds("k3s kubectl get --raw /readyz", timeout=300)
        k8s.succeed("${pauseImage} | k3s ctr image import -")
        k8s.succeed("${image} | k3s ctr image import -")
        k8s.succeed("${publishClusterInfo}")
        k8s.succeed("k3s kubectl apply -f ${manifestsFor nodes.headscale.networking.primaryIPAddress}")
        k8s.wait_until_succeeds("k3s kubectl get crd tkasignins.tka.specht-labs.de")
        k8s.succeed(
            f"k3s kubectl -n tka-system create secret generic tka-tailscale --from-literal=TS_AUTHKEY={server_key}",
            "k3s kubectl -n tka-system create secret generic tka-tls"
            " --from-file=tls.crt=${pki}/tka.crt --from-file=tls.key=${pki}/tka.key --from-file=ca.crt=${pki}/ca.crt",
        )
        try:
            k8s.wait_until_succeeds(
                "k3s kubectl -n tka-system rollout status deployment/tka-server --timeout=10s", timeout=600
            )
        except Exception:
            dump(k8s, "k3s kubectl -n tka-system describe pods")
            dump(k8s, "k3s kubectl -n tka-system logs deployment/tka-server")
            raise

    with subtest("the client joins the tailnet as alice"):
        client.wait_for_unit("tailscaled.service")
        client.succeed(
            f"tailscale up --login-server https://headscale --auth-key {alice_key} --hostname laptop"
        )
        client.wait_until_succeeds("getent hosts tka.${tailnet}", timeout=120)

    tka = "TKA_TAILSCALE_TAILNET=${tailnet} tka"

    with subtest("alice logs in and gets view"):
        env = client.succeed(f"{tka} login --quiet").strip()
        assert env.startswith("export KUBECONFIG="), env
        whoami = client.succeed(f"{env}; kubectl auth whoami")
        assert "tka-user-alice" in whoami, whoami
        client.succeed(f"{env}; kubectl get pods -A")
        denied = client.fail(f"{env}; kubectl create namespace x 2>&1")
        assert "forbidden" in denied.lower(), denied

    with subtest("kubectl get signin shows User, Role and Until"):
        signins = k8s.succeed("k3s kubectl get signin -n tka-system")
        for column in ["USER", "ROLE", "UNTIL"]:
            assert column in signins, signins
        assert "alice" in signins and "view" in signins, signins

    with subtest("logout revokes the saved token"):
        token = client.succeed(
            f"{env}; kubectl config view --raw --minify -o jsonpath='{{.users[0].user.token}}'"
        ).strip()
        assert token, "the kubeconfig carries no token"
        # kube-apiserver caches a successful token authentication for 10 s (README, "Revocation latency"):
        # let the last use age out, so the 5 s bound measures tka, not that cache.
        time.sleep(11)
        client.succeed(f"{tka} logout")
        started = time.monotonic()
        client.wait_until_succeeds(
            "test \"$(curl -ks -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer "
            + token
            + "' https://k8s:6443/api)\" = 401",
            timeout=10,
        )
        elapsed = time.monotonic() - started
        print(f"token rejected {elapsed:.1f} s after logout")
        assert elapsed <= 5, f"token still accepted {elapsed:.1f} s after logout"

    with subtest("exec credential plugin"):
        client.succeed(f"{tka} login --quiet")
        client.succeed(f"{tka} kubeconfig --exec --stdout > /root/exec.kubeconfig")
        exec_args = client.succeed(
            "kubectl --kubeconfig /root/exec.kubeconfig config view -o json | jq -r '.users[0].user.exec.args | join(\" \")'"
        )
        assert "credential" in exec_args and "--cluster ${clusterName}" in exec_args, exec_args
        client.succeed("kubectl --kubeconfig /root/exec.kubeconfig get pods -A")
        client.succeed(f"{tka} logout")
        client.fail("kubectl --kubeconfig /root/exec.kubeconfig get pods -A")
        plugin_exit = client.succeed("${runExecPlugin} /root/exec.kubeconfig").strip()
        assert plugin_exit == "4", f"tka credential after logout exited {plugin_exit}, expected 4 (not signed in)"

    with subtest("bob has no grant"):
        client.succeed(
            f"tailscale up --reset --login-server https://headscale --auth-key {bob_key} --hostname laptop-bob"
            " --force-reauth"
        )
        client.wait_until_succeeds(
            "tailscale status --json | jq -er '.User[(.Self.UserID | tostring)].LoginName' | grep -q '^bob'",
            timeout=60,
        )
        code, out = client.execute(f"{tka} login 2>&1")
        print(out)
        assert code == 3, f"bob's login exited {code}, expected 3 (no_grant)"
  '';
}
