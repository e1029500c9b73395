# The package set of one system: stubs of the nixpkgs functions the flake calls, with nixpkgs' argument
# names and checks (written from nixpkgs' sources: stdenv/generic/make-derivation.nix, build-support/rust,
# go/module.nix, docker/default.nix, trivial-builders, pkgs-lib/formats.nix, nixos/lib/testing). Derivations
# are real `derivation`s, so `.drvPath` and `nix flake check --no-build` work, but every builder fails.
{ lib, system, knobs ? { } }:
let
  inherit (builtins) attrNames isAttrs isBool isFunction isInt isList isString pathExists toJSON typeOf;
  inherit (lib) assertMsg;

  isLinux = lib.hasSuffix "-linux" system;

  # ------------------------------------------------------------------------------------------ mkDerivation
  # Values `derivation` accepts as they are; anything else is a builder argument that mkDerivation would
  # consume or reject, passed on as JSON so that it is forced completely.
  plain = v: isString v || builtins.isPath v || isInt v || isBool v || v == null
    || (isAttrs v && v ? outPath) || (isList v && lib.all plain v);

  # make-derivation.nix: `env` holds only strings, booleans, integers and derivations, and shares no name
  # with the derivation's own attributes.
  checkEnv = name: attrs:
    let
      env = attrs.env or { };
      overlap = attrNames (builtins.intersectAttrs env attrs);
      bad = lib.filter (n: !(isString env.${n} || isBool env.${n} || isInt env.${n} || lib.isDerivation env.${n}))
        (attrNames env);
    in
    assert assertMsg (isAttrs env && !lib.isDerivation env) "${name}: env must be an attribute set of environment variables";
    assert assertMsg (overlap == [ ])
      "${name}: the env attribute set cannot contain attributes passed to derivation: ${toJSON overlap}";
    assert assertMsg (bad == [ ])
      "${name}: env can only contain derivation, string, boolean or integer attributes; ${toJSON bad} are not";
    true;

  # stdenv.mkDerivation with finalAttrs, finalPackage and overrideAttrs (any of the three forms lib.toExtension
  # accepts), as nixpkgs has them.
  mkDerivation = fpargs:
    let
      rattrs = final: if isFunction fpargs then fpargs final else fpargs;
      extensible = rattrs:
        let
          args = rattrs (args // { inherit finalPackage; });
          name = args.name or "${args.pname or (throw "mkDerivation: neither name nor pname")}-${
            args.version or (throw "mkDerivation ${args.pname}: pname without version")}";
          outputs = args.outputs or [ "out" ];
          drvArgs = lib.mapAttrs (_: v: if plain v then v else toJSON v)
            (removeAttrs args [ "passthru" "meta" "env" "finalPackage" ]) // (args.env or { });
          drv = derivation (drvArgs // {
            inherit name system outputs;
            builder = "/bin/sh";
            args = [ "-c" "echo 'nix-stub: ${name} is a stub and cannot be built' >&2; exit 1" ];
          });
          finalPackage = assert assertMsg (isList outputs && lib.all isString outputs) "${name}: outputs must be a list of strings";
            assert checkEnv name args;
            removeAttrs args [ "finalPackage" ] // (args.passthru or { }) // drv // {
              meta = args.meta or { };
              overrideAttrs = f: extensible (lib.extends (lib.toExtension f) rattrs);
            };
        in
        finalPackage;
    in
    extensible rattrs;

  stdenv = {
    inherit mkDerivation;
    hostPlatform = {
      inherit system isLinux;
      isDarwin = !isLinux;
    };
    buildPlatform = stdenv.hostPlatform;
  };

  pkg = pname: version: extra: mkDerivation ({ inherit pname version; } // extra);

  # ------------------------------------------------------------------------------------------ Rust
  # Whether the file `rel` is part of `src`. A lib.fileset/cleanSourceWith source is asked through its filter
  # (as `builtins.path` would), because `nix flake check --no-build` evaluates read-only: the filtered
  # store path is never created there, so it cannot be looked into.
  inSource = src: rel:
    let
      parts = lib.splitString "/" rel;
      prefixes = lib.genList (i: lib.concatStringsSep "/" (lib.take (i + 1) parts)) (builtins.length parts);
      base = toString src.origSrc;
    in
    if src ? origSrc && src ? filter then
      pathExists "${base}/${rel}"
      && lib.all (p: src.filter "${base}/${p}" (if p == rel then "regular" else "directory")) prefixes
    else pathExists "${src}/${rel}";

  # build-support/rust/build-rust-package: an extension of mkDerivation; one of cargoLock, cargoHash,
  # cargoDeps or cargoVendorDir says where the dependencies come from.
  buildRustPackageFor = flavour: lib.extendMkDerivation {
    constructDrv = mkDerivation;
    excludeDrvArgNames = [ "cargoLock" "cargoHash" "cargoDeps" "cargoVendorDir" "depsExtraArgs" ];
    extendDrvArgs = _final:
      { pname
      , version
      , src
      , cargoLock ? null
      , cargoHash ? null
      , cargoBuildFlags ? [ ]
      , buildType ? "release"
      , ...
      }@args:
      let
        lockFile = cargoLock.lockFile or null;
        bins = lib.filter (f: f != "--bin") cargoBuildFlags;
        n = "buildRustPackage ${pname}";
      in
      {
        name = "${pname}-${version}${flavour}";
        cargoDepsJSON = toJSON { inherit lockFile cargoHash; };
        # Forced with the derivation, not here: the arguments may refer to finalAttrs.
        stubChecks =
          assert assertMsg (cargoLock != null || cargoHash != null || args ? cargoDeps || args ? cargoVendorDir)
            "${n}: cargoHash, cargoVendorDir, cargoDeps, or cargoLock must be set";
          assert assertMsg (lockFile == null || pathExists lockFile) "${n}: ${toString lockFile} does not exist";
          assert assertMsg (lockFile == null || isAttrs (builtins.fromTOML (builtins.readFile lockFile)))
            "${n}: Cargo.lock does not parse";
          assert assertMsg (isList cargoBuildFlags && lib.all isString cargoBuildFlags)
            "${n}: cargoBuildFlags must be a list of strings";
          assert assertMsg (lib.elem buildType [ "release" "debug" ]) "${n}: buildType is release or debug";
          # The filtered source must still hold the crate: manifest, lock file, library, every binary built.
          assert assertMsg (inSource src "Cargo.toml" && inSource src "Cargo.lock")
            "${n}: Cargo.toml/Cargo.lock are not in src";
          assert assertMsg (inSource src "src/lib.rs") "${n}: src/lib.rs is not in src";
          assert assertMsg (lib.all (b: inSource src "src/bin/${b}.rs") bins)
            "${n}: a binary of cargoBuildFlags ${toJSON cargoBuildFlags} is not in src";
          true;
      };
  };

  # ------------------------------------------------------------------------------------------ Go
  go = pkg "go" "1.26.8" { };
  # go/module.nix: vendorHash is required (null means "vendored in src"); CGO_ENABLED belongs in env.
  buildGoModuleWith = goPkg: lib.extendMkDerivation
    {
      constructDrv = mkDerivation;
      excludeDrvArgNames = [ "overrideModAttrs" ];
      extendDrvArgs = _final:
        { pname, vendorHash, subPackages ? [ ], ldflags ? [ ], tags ? [ ], ... }@args:
        let n = "buildGoModule ${pname}"; in
        {
          go = goPkg;
          # Forced with the derivation, not here: the arguments may refer to finalAttrs.
          stubChecks =
            assert assertMsg (args ? src && args ? version) "${n}: src and version are required";
            assert assertMsg (vendorHash == null || isString vendorHash) "${n}: vendorHash is a string or null";
            assert assertMsg (isList subPackages && lib.all isString subPackages) "${n}: subPackages are strings";
            assert assertMsg (lib.all isString ldflags && lib.all isString tags) "${n}: ldflags and tags are strings";
            assert assertMsg (!(args ? CGO_ENABLED)) "${n}: set env.CGO_ENABLED, not CGO_ENABLED";
            true;
        };
    } // { override = { go }: buildGoModuleWith go; };
  buildGoModule = buildGoModuleWith go;

  # pkgs/by-name/ta/tailscale/package.nix, with the attributes an override can see (values abridged).
  tailscale = buildGoModule (finalAttrs: {
    pname = "tailscale";
    version = knobs.tailscale or "1.102.5";
    outputs = [ "out" "derper" ];
    src = pkg "tailscale-src" finalAttrs.version { };
    vendorHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    nativeBuildInputs = [ makeWrapper installShellFiles ];
    env.CGO_ENABLED = 0;
    subPackages = [ "cmd/derper" "cmd/derpprobe" "cmd/tailscaled" "cmd/get-authkey" ];
    excludedPackages = [ "tstest/integration" ];
    ldflags = [
      "-w"
      "-s"
      "-X tailscale.com/version.longStamp=${finalAttrs.version}"
      "-X tailscale.com/version.shortStamp=${finalAttrs.version}"
    ];
    tags = [ "ts_include_cli" ];
    # nixpkgs carries fixes as patches from time to time; the stub has one, so that losing them shows.
    patches = [ (writeText "tailscale-nixpkgs-fix.patch" "") ];
    preBuild = "rm -rf ./tool";
    doCheck = false;
    postInstall = ''
      ln -s $out/bin/tailscaled $out/bin/tailscale
      moveToOutput "bin/derper" "$derper"
      wrapProgram $out/bin/tailscaled --prefix PATH : /iproute2/bin
    '';
    meta = {
      homepage = "https://tailscale.com";
      license = lib.licenses.bsd3;
      mainProgram = "tailscale";
    };
  });
  makeWrapper = pkg "make-wrapper-hook" "0" { };
  installShellFiles = pkg "install-shell-files" "0" { };

  # ------------------------------------------------------------------------------------------ trivial builders
  runCommand = name: env: buildCommand:
    assert assertMsg (isString name && isAttrs env) "runCommand: runCommand NAME ENV BUILDCOMMAND";
    mkDerivation (env // { inherit name buildCommand; });
  # trivial-builders: writeTextFile's exact argument set.
  writeTextFile =
    { name
    , text
    , executable ? false
    , destination ? ""
    , checkPhase ? ""
    , meta ? { }
    , passthru ? { }
    , allowSubstitutes ? false
    , preferLocalBuild ? true
    , derivationArgs ? { }
    }:
      assert assertMsg (isString text) "writeTextFile ${name}: text must be a string, not a ${typeOf text}";
      runCommand name
        ({ inherit text executable destination checkPhase meta passthru allowSubstitutes preferLocalBuild; }
          // derivationArgs) "stub";
  writeText = name: text: writeTextFile { inherit name text; };
  writeShellScript = name: text: writeTextFile {
    inherit name;
    executable = true;
    text = "#!/bin/sh\n${text}";
  };

  # pkgs-lib/formats.nix: YAML takes JSON values; `generate` passes the value to its builder as JSON.
  formats.yaml = {}: {
    type =
      let
        valueType = with lib.types; nullOr (oneOf [ bool int float str path (attrsOf valueType) (listOf valueType) ])
          // { description = "YAML value"; };
      in
      valueType;
    generate = name: value: runCommand name { value = toJSON value; } "stub";
  };

  # ------------------------------------------------------------------------------------------ images
  # docker/default.nix: streamLayeredImage's exact argument set; buildLayeredImage adds the compressor.
  layeredArgs = {
    name = false;
    tag = true;
    fromImage = true;
    contents = true;
    config = true;
    architecture = true;
    created = true;
    mtime = true;
    uid = true;
    gid = true;
    uname = true;
    gname = true;
    maxLayers = true;
    extraCommands = true;
    fakeRootCommands = true;
    enableFakechroot = true;
    includeStorePaths = true;
    includeNixDB = true;
    passthru = true;
    meta = true;
    layeringPipeline = true;
    debug = true;
  };
  # Keys of the OCI image config (image-spec config.md), so that a misspelt key is caught.
  ociConfigKeys = [ "User" "ExposedPorts" "Env" "Entrypoint" "Cmd" "Volumes" "WorkingDir" "Labels" "StopSignal" "ArgsEscaped" "Memory" "MemorySwap" "CpuShares" "Healthcheck" ];
  # A function with a fixed argument set (no `...`), as nixpkgs declares it: Nix rejects other arguments.
  # `allowed` maps each argument to whether it has a default, like builtins.functionArgs.
  strictArgs = fname: allowed: args:
    let
      unknown = lib.filter (n: !(allowed ? ${n})) (attrNames args);
      missing = lib.filter (n: !allowed.${n} && !(args ? ${n})) (attrNames allowed);
    in
    assert assertMsg (unknown == [ ]) "${fname}: called with unexpected argument(s) ${toJSON unknown}";
    assert assertMsg (missing == [ ]) "${fname}: called without required argument(s) ${toJSON missing}";
    args;
  image = kind: args0:
    let
      args = strictArgs "dockerTools.${kind}"
        (if kind == "buildLayeredImage" then layeredArgs // { compressor = true; } else layeredArgs)
        args0;
      config = args.config or { };
      badKeys = lib.filter (k: !(lib.elem k ociConfigKeys)) (attrNames config);
      tag = if args.tag or null == null then "stub" else args.tag;
    in
    assert assertMsg (badKeys == [ ]) "dockerTools.${kind}: unknown config key(s) ${toJSON badKeys}";
    assert assertMsg (isList (args.contents or [ ]) || lib.isDerivation args.contents)
      "dockerTools.${kind}: contents must be a list or a derivation";
    runCommand "${baseNameOf args.name}${if kind == "buildLayeredImage" then ".tar.gz" else ".tar"}"
      {
        configJSON = toJSON config;
        contents = args.contents or [ ];
        fakeRootCommands = args.fakeRootCommands or "";
        passthru = {
          imageName = args.name;
          imageTag = tag;
        };
      } "stub";
  withArgs = args: f: lib.setFunctionArgs f args;

  dockerTools = {
    streamLayeredImage = lib.makeOverridable (withArgs layeredArgs (image "streamLayeredImage"));
    buildLayeredImage = lib.makeOverridable (withArgs (layeredArgs // { compressor = true; })
      (image "buildLayeredImage"));
    fakeNss = lib.makeOverridable
      ({ extraPasswdLines ? [ ], extraGroupLines ? [ ] }:
        assert assertMsg (lib.all isString (extraPasswdLines ++ extraGroupLines)) "fakeNss: lines are strings";
        runCommand "fake-nss" { inherit extraPasswdLines extraGroupLines; } "stub")
      { };
    caCertificates = runCommand "ca-certificates" { } "stub";
    usrBinEnv = runCommand "usr-bin-env" { } "stub";
    binSh = runCommand "bin-sh" { } "stub";
  };

  # ------------------------------------------------------------------------------------------ the set
  self = {
    inherit lib system stdenv dockerTools tailscale go buildGoModule formats makeWrapper installShellFiles;
    inherit runCommand writeTextFile writeText writeShellScript;
    rustPlatform.buildRustPackage = buildRustPackageFor "";
    pkgsStatic = self // {
      rustPlatform.buildRustPackage = buildRustPackageFor "-static";
      stdenv = stdenv // { hostPlatform = stdenv.hostPlatform // { isStatic = true; }; };
    };
    closureInfo = { rootPaths }: runCommand "closure-info" { inherit rootPaths; } "stub";
    mkShell = { name ? "nix-shell", packages ? [ ], shellHook ? "", ... }@args:
      assert assertMsg (isList packages && lib.all lib.isDerivation packages) "mkShell: packages must be derivations";
      mkDerivation (removeAttrs args [ "packages" ] // { inherit name shellHook; nativeBuildInputs = packages; });
    testers.runNixOSTest = import ./nixos-test.nix { inherit lib pkgs; };
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
    # The VM tests need headscale >= 0.29 (tests/static/check.sh also evaluates with an older one).
    headscale = pkg "headscale" (knobs.headscale or "0.29.3") { meta.mainProgram = "headscale"; };
  };
  pkgs = self;
in
self
