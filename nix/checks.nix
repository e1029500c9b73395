# `nix flake check`. The VM tests need KVM and the binary cache.
{ pkgs, info, packages }:
let
  inherit (pkgs) lib;
  src = info.sources.tests;

  # A check that runs cargo over the test sources with the vendored dependencies of Cargo.lock.
  cargoCheck = { name, nativeBuildInputs ? [ ], script }:
    pkgs.rustPlatform.buildRustPackage {
      pname = "tka-${name}";
      inherit (info) version;
      inherit src nativeBuildInputs;
      cargoLock.lockFile = ../Cargo.lock;
      buildPhase = ''
        runHook preBuild
        ${script}
        runHook postBuild
      '';
      doCheck = false;
      installPhase = ''
        touch $out
      '';
    };

  # The VM tests need headscale >= 0.29 (grants with app capabilities). On an older nixpkgs they are left
  # out with a warning, and every other check still runs.
  vmTest = file: import file {
    inherit pkgs;
    inherit (packages) tka image;
    kustomizeSrc = info.sources.kustomize;
  };
  vmTests =
    if lib.versionAtLeast pkgs.headscale.version "0.29" then {
      vm-login-flow = vmTest ../tests/nixos/login-flow.nix;
      vm-federation = vmTest ../tests/nixos/federation.nix;
    } else
      lib.warn
        ("checks: vm-login-flow and vm-federation are skipped: they need headscale >= 0.29, and this nixpkgs has "
          + "headscale ${pkgs.headscale.version}; update the input (`nix flake update nixpkgs`) to run them")
        { };
in
{
  # The image holds no shell and no coreutils, and is configured as the product states.
  image-closure = pkgs.runCommand "tka-image-closure"
    {
      nativeBuildInputs = [ pkgs.jq pkgs.gnutar pkgs.gzip ];
      closure = pkgs.closureInfo { rootPaths = packages.images.contents; };
      tarball = packages.image-tarball;
    } ''
    fail() { echo "image-closure: $*" >&2; exit 1; }

    if grep -E '^${builtins.storeDir}/[a-z0-9]+-(bash|bash-interactive|dash|zsh|mksh|busybox|coreutils|coreutils-full|toybox)-' \
        "$closure/store-paths"; then
      fail "the closure contains a shell or coreutils (listed above)"
    fi

    mkdir image
    tar -xzf "$tarball" -C image
    config=image/$(jq -r '.[0].Config' image/manifest.json)
    jq -e '.config.User == "65532:65532"' "$config" || fail "User is not 65532:65532"
    jq -e '.config.Entrypoint == ["/tka-server"]' "$config" || fail "Entrypoint is not [\"/tka-server\"]"
    jq -e '.config.Cmd == ["serve", "--config", "/etc/tka/config.yaml"]' "$config" || fail "unexpected Cmd"

    for layer in $(jq -r '.[0].Layers[]' image/manifest.json); do
      tar --numeric-owner -tvf "image/$layer"
    done > listing
    grep -Eq ' (\./)?tka-server -> ' listing || fail "/tka-server is missing"
    grep -Eq ' (\./)?bin/tailscaled -> ' listing || fail "/bin/tailscaled is missing"
    grep -Eq '^d.* 65532/65532 .* (\./)?var/lib/tsnet/?$' listing || fail "/var/lib/tsnet is not owned by 65532"
    grep -Eq '^drwxrwxrwt .* (\./)?tmp/?$' listing || fail "/tmp is not 1777"
    if grep -E ' (\./)?(bin|usr/bin)/(sh|bash|busybox)( |$)' listing; then
      fail "the image has a shell"
    fi
    touch $out
  '';

  # The rendered overlays satisfy Pod Security "restricted".
  manifests = pkgs.runCommand "tka-manifests-check"
    {
      nativeBuildInputs = [ pkgs.yq-go ];
      manifests = packages.manifests;
    } ''
    for file in "$manifests"/primary.yaml "$manifests"/federated.yaml; do
      deploy() { yq -e "select(.kind == \"Deployment\") | $1" "$file" > /dev/null || { echo "$file: $2" >&2; exit 1; }; }
      deploy '.spec.template.spec.securityContext.runAsNonRoot == true' "runAsNonRoot is not true"
      deploy '.spec.template.spec.securityContext.seccompProfile.type == "RuntimeDefault"' "no RuntimeDefault seccomp"
      deploy '.spec.template.spec.containers[] | .securityContext.allowPrivilegeEscalation == false' \
        "allowPrivilegeEscalation is not false"
      deploy '.spec.template.spec.containers[] | .securityContext.readOnlyRootFilesystem == true' \
        "readOnlyRootFilesystem is not true"
      deploy '.spec.template.spec.containers[] | .securityContext.capabilities.drop | contains(["ALL"])' \
        "capabilities are not dropped"
      if grep -q 'hostPath' "$file"; then echo "$file: hostPath volume" >&2; exit 1; fi
    done
    yq -e 'select(.kind == "CustomResourceDefinition") | .metadata.name == "tkasignins.tka.specht-labs.de"' \
      "$manifests/tka-k8s.yaml" > /dev/null
    if yq -e 'select(.kind == "Deployment")' "$manifests/tka-k8s.yaml" > /dev/null 2>&1; then
      echo "tka-k8s.yaml must not contain a workload" >&2; exit 1
    fi
    touch $out
  '';

  # Unit tests and the tests of the built binaries (the integration tests need the peers: tests/run.sh).
  cargo-test = cargoCheck {
    name = "cargo-test";
    script = "cargo test --offline --locked";
  };

  clippy = cargoCheck {
    name = "clippy";
    nativeBuildInputs = [ pkgs.clippy ];
    script = "cargo clippy --offline --locked --all-targets --features integration -- -D warnings";
  };

  fmt = pkgs.runCommand "tka-fmt"
    {
      nativeBuildInputs = [ pkgs.cargo pkgs.rustfmt ];
    } ''
    cp -r ${src} source
    chmod -R u+w source
    cd source
    HOME=$TMPDIR cargo fmt --all -- --check
    touch $out
  '';

  nix-lint = pkgs.runCommand "tka-nix-lint"
    {
      nativeBuildInputs = [ pkgs.deadnix pkgs.nixpkgs-fmt ];
    } ''
    deadnix --fail ${info.sources.nix}
    nixpkgs-fmt --check ${info.sources.nix}
    touch $out
  '';
}
  // vmTests
