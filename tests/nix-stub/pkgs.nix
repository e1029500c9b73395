# Fake nixpkgs package set for one system. Builders check their arguments the way nixpkgs does and return
# derivations that can be instantiated (`nix flake check --no-build`) but never built: the builder fails.
{ lib, system }:
let
  inherit (builtins) all attrNames isAttrs isFunction isList isString pathExists toJSON;

  isLinux = lib.hasSuffix "-linux" system;

  # Derivation attributes must be strings, paths, derivations, numbers, booleans or lists of them; anything
  # else (configs, cargoLock, …) is checked by the builder and passed on as JSON, which forces it completely.
  plain = v: isString v || builtins.isPath v || builtins.isInt v || builtins.isBool v || v == null
    || (isAttrs v && v ? outPath) || (isList v && all plain v);
  drvAttrs = attrs: builtins.mapAttrs (_: v: if plain v then v else toJSON v)
    (removeAttrs attrs [ "passthru" "meta" ]);

  mkDrv = name: attrs:
    let
      drv = derivation (drvAttrs attrs // {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "echo 'nix-stub: ${name} is a stub and cannot be built' >&2; exit 1" ];
      });
      self = drv // (attrs.passthru or { }) // {
        meta = attrs.meta or { };
        overrideAttrs = f: mkDrv name (attrs // (if isFunction f then f attrs else f));
      };
    in
    self;

  pkg = name: version: extra: mkDrv "${name}-${version}" ({ pname = name; inherit version; } // extra);

  # `f` called with exactly the arguments nixpkgs' function accepts: an unknown argument is an error.
  strict = fname: allowed: required: args:
    let
      unknown = lib.filter (n: !(lib.elem n allowed)) (attrNames args);
      missing = lib.filter (n: !(args ? ${n})) required;
    in
    if unknown != [ ] then throw "${fname}: unexpected argument(s) ${toJSON unknown}"
    else if missing != [ ] then throw "${fname}: missing argument(s) ${toJSON missing}"
    else args;

  fail = msg: throw "nix-stub: ${msg}";

  # ------------------------------------------------------------------------------------------------ Rust
  rustPlatformFor = flavour: {
    buildRustPackage = args:
      let
        src = args.src or (fail "buildRustPackage: no src");
        lockFile = args.cargoLock.lockFile or (fail "buildRustPackage ${args.pname}: no cargoLock.lockFile");
        binFlags = args.cargoBuildFlags or [ ];
        bins = lib.filter (f: f != "--bin") binFlags;
      in
      assert lib.assertMsg (args ? pname && args ? version) "buildRustPackage: pname and version are required";
      assert lib.assertMsg (pathExists lockFile) "buildRustPackage ${args.pname}: ${toString lockFile} does not exist";
      assert lib.assertMsg (isAttrs (builtins.fromTOML (builtins.readFile lockFile)))
        "buildRustPackage ${args.pname}: Cargo.lock does not parse";
      # The restricted source must still hold the crate: manifest, lock file, library and every binary built.
      assert lib.assertMsg (pathExists "${src}/Cargo.toml" && pathExists "${src}/Cargo.lock")
        "buildRustPackage ${args.pname}: Cargo.toml/Cargo.lock are not in src";
      assert lib.assertMsg (pathExists "${src}/src/lib.rs") "buildRustPackage ${args.pname}: src/lib.rs is not in src";
      assert lib.assertMsg (all (b: pathExists "${src}/src/bin/${b}.rs") bins)
        "buildRustPackage ${args.pname}: a binary of cargoBuildFlags ${toJSON binFlags} is not in src";
      mkDrv "${args.pname}-${args.version}${flavour}" (args // { inherit src; });
  };

  # ------------------------------------------------------------------------------------------------ Go
  go = pkg "go" "1.26.8" { };
  buildGoModuleWith = goPkg: {
    override = { go }: buildGoModuleWith go;
    __functor = _: args:
      assert lib.assertMsg (args ? pname && args ? version && args ? src) "buildGoModule: pname, version, src";
      assert lib.assertMsg (args ? vendorHash) "buildGoModule ${args.pname}: vendorHash is required";
      assert lib.assertMsg (all isString (args.subPackages or [ ])) "buildGoModule: subPackages are strings";
      assert lib.assertMsg (!(args ? CGO_ENABLED)) "buildGoModule: set env.CGO_ENABLED, not CGO_ENABLED";
      mkDrv "${args.pname}-${args.version}" (args // { go = goPkg; });
  };

  tailscale = pkg "tailscale" "1.102.5" {
    passthru = {
      src = mkDrv "tailscale-src" { };
      vendorHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
      inherit go;
    };
  };

  # ------------------------------------------------------------------------------------------------ images
  # Argument lists of nixpkgs' dockerTools (pkgs/build-support/docker/default.nix).
  layeredArgs = [
    "name"
    "tag"
    "fromImage"
    "contents"
    "config"
    "architecture"
    "created"
    "mtime"
    "uid"
    "gid"
    "uname"
    "gname"
    "maxLayers"
    "extraCommands"
    "fakeRootCommands"
    "enableFakechroot"
    "includeStorePaths"
    "includeNixDB"
    "passthru"
    "meta"
    "layeringPipeline"
    "debug"
  ];
  # Keys of the OCI image config (image-spec config.md), so a misspelt key is caught.
  ociConfigKeys = [
    "User"
    "ExposedPorts"
    "Env"
    "Entrypoint"
    "Cmd"
    "Volumes"
    "WorkingDir"
    "Labels"
    "StopSignal"
    "ArgsEscaped"
    "Memory"
    "MemorySwap"
    "CpuShares"
    "Healthcheck"
  ];
  image = kind: extra: args0:
    let
      args = strict "dockerTools.${kind}" (layeredArgs ++ extra) [ "name" ] args0;
      config = args.config or { };
      badKeys = lib.filter (k: !(lib.elem k ociConfigKeys)) (attrNames config);
      tag = if args.tag or null == null then "stub" else args.tag;
    in
    assert lib.assertMsg (badKeys == [ ]) "dockerTools.${kind}: unknown config key(s) ${toJSON badKeys}";
    assert lib.assertMsg (all (c: isList c || (isAttrs c && c ? outPath)) [ args.contents or [ ] ])
      "dockerTools.${kind}: contents must be a list or a derivation";
    mkDrv "${baseNameOf args.name}${if kind == "buildLayeredImage" then ".tar.gz" else ".tar"}" {
      configJSON = toJSON config;
      contents = args.contents or [ ];
      fakeRootCommands = args.fakeRootCommands or "";
      passthru = {
        imageName = args.name;
        imageTag = tag;
      };
    };

  fakeNssWith = { extraPasswdLines ? [ ], extraGroupLines ? [ ] }:
    (mkDrv "fake-nss" { inherit extraPasswdLines extraGroupLines; }) // { override = fakeNssWith; };

  dockerTools = {
    streamLayeredImage = image "streamLayeredImage" [ ];
    buildLayeredImage = image "buildLayeredImage" [ "compressor" ];
    fakeNss = fakeNssWith { };
    caCertificates = mkDrv "ca-certificates" { };
    usrBinEnv = mkDrv "usr-bin-env" { };
    binSh = mkDrv "bin-sh" { };
  };

  # ------------------------------------------------------------------------------------------------ NixOS
  # Checks what the test module must have and forces the test script with the nodes' addresses.
  runNixOSTest = module:
    let
      m = if isFunction module then module { } else module;
      t = strict "testers.runNixOSTest" [ "name" "nodes" "testScript" "meta" "skipLint" "skipTypeCheck" "interactive" "extraPythonPackages" "defaults" ] [ "name" "nodes" "testScript" ] m;
      names = attrNames t.nodes;
      nodes = lib.genAttrs names (n: {
        networking.primaryIPAddress = "192.168.1.${toString (1 + lib.foldl' (i: x: if x < n then i + 1 else i) 0 names)}";
        config.networking.primaryIPAddress = nodes.${n}.networking.primaryIPAddress;
      });
      script = if isFunction t.testScript then t.testScript { inherit nodes; } else t.testScript;
      nodeConfigs = builtins.mapAttrs (_: n: if isFunction n then n { inherit lib; pkgs = self; config = { }; } else n) t.nodes;
    in
    assert lib.assertMsg (isString script) "runNixOSTest: testScript is not a string";
    mkDrv "vm-test-run-${t.name}" {
      testScript = script;
      nodesJSON = toJSON (builtins.mapAttrs (_: c: builtins.deepSeq c (attrNames c)) nodeConfigs);
    };

  # ------------------------------------------------------------------------------------------------ the set
  self = {
    inherit lib system dockerTools tailscale go;
    stdenv = {
      hostPlatform = {
        inherit system isLinux;
        isDarwin = !isLinux;
      };
    };

    rustPlatform = rustPlatformFor "";
    pkgsStatic = self // { rustPlatform = rustPlatformFor "-static"; };
    buildGoModule = buildGoModuleWith go;

    runCommand = name: env: buildCommand: mkDrv name (env // { inherit buildCommand; });
    writeText = name: text: mkDrv name { inherit text; };
    writeShellScript = name: text: mkDrv name { inherit text; };
    closureInfo = args: mkDrv "closure-info" (strict "closureInfo" [ "rootPaths" ] [ "rootPaths" ] args);
    mkShell = args: mkDrv (args.name or "nix-shell") (removeAttrs args [ "shellHook" ] // { shellHook = args.shellHook or ""; });

    formats.yaml = _: {
      type = lib.types.attrs;
      generate = name: value: mkDrv name { value = toJSON value; };
    };

    testers = { inherit runNixOSTest; };
  }
  // lib.genAttrs [
    "buildah"
    "cargo"
    "clippy"
    "coreutils"
    "curl"
    "deadnix"
    "gnutar"
    "gzip"
    "jq"
    "k3s"
    "kubectl"
    "kustomize"
    "nixpkgs-fmt"
    "openssl"
    "podman"
    "rust-analyzer"
    "rustc"
    "rustfmt"
    "skopeo"
    "tini"
    "umoci"
    "yq-go"
  ]
    (name: pkg name "0-stub" { })
  // {
    # The VM test requires headscale >= 0.29.
    headscale = pkg "headscale" "0.29.3" { };
  };
in
self
