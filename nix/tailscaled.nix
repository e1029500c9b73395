# tailscaled and the tailscale CLI for the image: nixpkgs' tailscale derivation, overridden, so that its
# source, vendor hash, patches, Go version, build tags (ts_include_cli), ldflags and CGO_ENABLED=0 (static)
# carry over as nixpkgs maintains them. Only what the image must not have changes: nixpkgs wraps tailscaled
# in a shell script that puts iproute2/iptables on PATH (userspace networking needs neither, and the image
# has no shell), installs the systemd unit and shell completions, and builds derper in a second output.
{ tailscale }:
# pname stays "tailscale": the Go modules derivation is named after it, so it is the one the binary cache has.
tailscale.overrideAttrs (old: {
  outputs = [ "out" ];
  subPackages = [ "cmd/tailscaled" ];
  # tailscaled is built with the CLI included (ts_include_cli): `tailscale` is the same binary.
  postInstall = ''
    ln -s tailscaled $out/bin/tailscale
  '';
  doCheck = false;
  meta = old.meta // {
    description = "tailscaled and tailscale from nixpkgs' tailscale, unwrapped and static, for the tka image";
    mainProgram = "tailscaled";
  };
})
