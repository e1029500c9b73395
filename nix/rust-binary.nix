# One binary of the tka crate. Tests are separate checks (nix/checks.nix), so doCheck is off here.
{ lib
, rustPlatform
, info
, bin
, postInstall ? ""
}:
rustPlatform.buildRustPackage {
  pname = bin;
  inherit (info) version;
  src = info.sources.build;
  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [ "--bin" bin ];
  doCheck = false;

  # Read by src/lib.rs with option_env! (`tka version`, `tka-server version`).
  TKA_BUILD_COMMIT = info.revision;
  TKA_BUILD_DATE = info.date;

  inherit postInstall;

  meta = {
    description = "Tailscale Kubernetes Auth (${bin})";
    homepage = info.repository;
    license = lib.licenses.asl20;
    mainProgram = bin;
  };
}
