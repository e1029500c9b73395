# Version and build metadata shared by the packages, the image and the checks. Only nix/binaries.nix's stamping
# step and the image use the revision and date: the compile depends on the source alone.
{ lib, self }:
let
  cargo = builtins.fromTOML (builtins.readFile ../Cargo.toml);

  # `lastModifiedDate` is the commit time of the flake source (YYYYMMDDhhmmss): fixed for a commit, so the
  # binaries' build date and the image's creation date do not change between rebuilds.
  stamp = self.lastModifiedDate or "19700101000001";
  part = start: len: builtins.substring start len stamp;
in
{
  inherit (cargo.package) version license repository;
  revision = self.rev or self.dirtyRev or "unknown";
  rev = self.rev or null;
  dirtyRev = self.dirtyRev or null;
  date = "${part 0 4}-${part 4 2}-${part 6 2}T${part 8 2}:${part 10 2}:${part 12 2}Z";

  # Sources, each restricted to what its consumer reads, so that editing tests, docs or
  # manifests does not rebuild the binaries.
  sources =
    let
      fs = lib.fileset;
      root = ../.;
    in
    {
      # `cargo build --bin` parses the [[test]]/[[bench]] targets of Cargo.toml but does not read their files,
      # so tests/ and benches/ are not part of the binaries' source.
      build = fs.toSource {
        inherit root;
        fileset = fs.unions [ ../Cargo.toml ../Cargo.lock ../src (fs.maybeMissing ../build.rs) ];
      };
      # cargo test/clippy: also the test targets, their fixtures and the committed CRD/RBAC the tests compare.
      tests = fs.toSource {
        inherit root;
        fileset = fs.unions [
          ../Cargo.toml
          ../Cargo.lock
          ../src
          (fs.maybeMissing ../build.rs)
          ../benches
          ../deploy/kustomize
          ../tests/fixtures
          (fs.fileFilter (file: file.hasExt "rs") ../tests)
        ];
      };
      kustomize = fs.toSource { root = ../deploy/kustomize; fileset = ../deploy/kustomize; };
      nix = fs.toSource { inherit root; fileset = fs.fileFilter (file: file.hasExt "nix") root; };
    };
}
