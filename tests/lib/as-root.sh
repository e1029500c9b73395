# Sourced by the scripts that need root (network namespaces, TUN devices, podman): `as_root "$@"` runs the
# calling script again through sudo when it is not root, and does nothing as root, so the same command works
# on a developer's machine (a user with sudo) and on a fresh root-only machine like CI's (where there is no
# sudo at all). sudo resets the environment; PATH and the Rust and Go homes are passed on so root finds the
# caller's toolchains instead of an empty /root.
as_root() {
	[[ $(id -u) == 0 ]] && return 0
	if ! command -v sudo >/dev/null; then
		echo "${0##*/} needs root (network namespaces): run it as root, or install sudo" >&2
		exit 1
	fi
	echo "${0##*/}: not root, running it again with sudo" >&2
	exec sudo env PATH="$PATH" \
		CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" \
		${GOPATH:+GOPATH="$GOPATH"} ${GOTOOLCHAIN:+GOTOOLCHAIN="$GOTOOLCHAIN"} \
		${TKA_PEERS_BIN:+TKA_PEERS_BIN="$TKA_PEERS_BIN"} \
		"$(realpath "$0")" "$@"
}
