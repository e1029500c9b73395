# tka and tka-server from one cargo build (one dependency build), in two outputs so the image's closure
# holds only the server. On Linux the compile depends on the source alone: the commit and date are compiled
# in as fixed placeholders and stamped into copies afterwards (./stamp.sh), so a commit that changes no
# source (a README edit) reuses the compiled binaries and only re-runs the cheap stamping. macOS gets the CLI
# only, compiled with the values: its binaries carry a code signature that patching bytes would break.
{ lib
, stdenv
, rustPlatform
, runCommand
, info
}:
let
  linux = stdenv.hostPlatform.isLinux;

  # Placeholders with the width of the stamped values: a 40-character commit and a 20-character date.
  placeholder = {
    commit = "tka-unstamped-commit-0000000000000000000";
    date = "0000-00-00T00:00:00Z";
  };
  # A clean tree's revision as it is; a dirty one as 34 characters of it plus "-dirty"; none (not a git
  # checkout) as the all-zero object id that git uses for "no object".
  commit =
    if info.rev != null then info.rev
    else if info.dirtyRev != null then "${builtins.substring 0 34 info.dirtyRev}-dirty"
    else lib.strings.replicate 40 "0";
  compiledIn = if linux then placeholder else { inherit commit; inherit (info) date; };

  meta = bin: description: {
    inherit description;
    homepage = info.repository;
    license = lib.licenses.asl20;
    mainProgram = bin;
  };

  # `ts-k8s-auth` keeps the upstream CLI's shell wrappers working.
  cliAlias = "ln -s tka $out/bin/ts-k8s-auth";

  compiled = rustPlatform.buildRustPackage {
    pname = if linux then "tka-unstamped" else "tka";
    inherit (info) version;
    src = info.sources.build;
    cargoLock.lockFile = ../Cargo.lock;

    cargoBuildFlags = [ "--bin" "tka" ] ++ lib.optionals linux [ "--bin" "tka-server" ];
    outputs = [ "out" ] ++ lib.optional linux "server";
    doCheck = false;

    env = {
      TKA_BUILD_COMMIT = compiledIn.commit;
      TKA_BUILD_DATE = compiledIn.date;
    };

    postInstall =
      if linux then ''
        mkdir -p $server/bin
        mv $out/bin/tka-server $server/bin/
      '' else cliAlias;

    meta = meta "tka" "Tailscale Kubernetes Auth (tka CLI)";
  };

  stamped = { bin, from, postInstall ? "", description }:
    runCommand "${bin}-${info.version}"
      {
        meta = meta bin description;
        passthru.unstamped = compiled;
      } ''
      mkdir -p $out/bin
      cp ${from}/bin/${bin} $out/bin/${bin}
      chmod u+w $out/bin/${bin}
      bash ${./stamp.sh} $out/bin/${bin} \
        ${placeholder.commit} ${commit} ${placeholder.date} ${info.date}
      ${postInstall}
    '';
in
if linux then {
  tka = stamped {
    bin = "tka";
    from = compiled.out;
    description = "Tailscale Kubernetes Auth (tka CLI)";
    postInstall = cliAlias;
  };
  tka-server = stamped {
    bin = "tka-server";
    from = compiled.server;
    description = "Tailscale Kubernetes Auth (tka-server)";
  };
} else {
  tka = compiled;
}
