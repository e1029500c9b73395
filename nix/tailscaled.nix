# tailscaled and the tailscale CLI for the image, from nixpkgs' tailscale source, without nixpkgs' wrapper:
# nixpkgs wraps tailscaled in a shell script that puts iproute2/iptables on PATH. Userspace networking needs
# neither and the image has no shell, so the binaries are used as built (static: CGO_ENABLED=0).
{ lib
, buildGoModule
, tailscale
}:
let
  # Build with the Go that nixpkgs builds tailscale with: tailscale's go.mod tracks new Go releases closely.
  buildGo = if tailscale ? go then buildGoModule.override { inherit (tailscale) go; } else buildGoModule;
in
buildGo {
  pname = "tailscaled";
  inherit (tailscale) version src vendorHash;

  subPackages = [ "cmd/tailscaled" "cmd/tailscale" ];
  env.CGO_ENABLED = 0;
  ldflags = [
    "-s"
    "-w"
    "-X tailscale.com/version.longStamp=${tailscale.version}"
    "-X tailscale.com/version.shortStamp=${tailscale.version}"
  ];
  doCheck = false;

  meta = {
    description = "tailscaled and tailscale, unwrapped and static, for the tka image";
    homepage = "https://tailscale.com";
    license = lib.licenses.bsd3;
    mainProgram = "tailscaled";
  };
}
