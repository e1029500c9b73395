#!/usr/bin/env bash
# Nix >= 2.18 for the offline flake checks. nixpkgs' lib needs Nix 2.18 (lib/minfeatures.nix) and Debian 12's
# nix-bin is 2.8, so Debian 13's nix-bin (2.26) is installed into a debootstrapped Debian 13 root from Debian's
# archive, once, and reused afterwards. Only evaluation runs in it: no daemon, no sandbox, no substituters.
#
#   nix-chroot.sh setup DIR                       create DIR once (about 3 minutes; a no-op when it is ready)
#   nix-chroot.sh run DIR [PATH...] -- CMD ARG... run CMD as root inside DIR, every PATH (file or directory of
#                                                 this machine) mounted at the same path, in a mount namespace
#                                                 of its own (nothing stays mounted, nothing outside changes)
#
# With NIX_CHROOT_STORE=DIR, that directory of this machine is the root's /nix (store and database): a caller
# gives each run a fresh one, so nothing accumulates in DIR.
# Needs root, debootstrap (apt) and TKA_DEBIAN_MIRROR or deb.debian.org.
set -euo pipefail

SUITE=trixie
MIRROR=${TKA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump to rebuild existing roots.
STAMP="suite=$SUITE packages=nix-bin,bash,coreutils v1"

usage() {
	sed -n '7,10p' "$0" >&2
	exit 2
}

setup() {
	local dir=$1 lock
	mkdir -p "$(dirname "$dir")"
	exec {lock}>"$dir.lock"
	flock "$lock"
	if [[ -f $dir/.tka-stamp && $(<"$dir/.tka-stamp") == "$STAMP" ]]; then return; fi
	command -v debootstrap >/dev/null || {
		echo "nix-chroot: debootstrap is missing: apt-get install debootstrap" >&2
		exit 1
	}
	local tmp=$dir.tmp
	rm -rf "$tmp" "$dir"
	echo "nix-chroot: debootstrap $SUITE into $dir (once)" >&2
	debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$dir.log" 2>&1 || {
		tail -20 "$dir.log" >&2
		echo "nix-chroot: debootstrap failed (log: $dir.log)" >&2
		exit 1
	}
	mkdir -p "$tmp/nix"
	NIX_CHROOT_STORE='' in_root "$tmp" -- sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends nix-bin && apt-get clean' >>"$dir.log" 2>&1 || {
		tail -20 "$dir.log" >&2
		echo "nix-chroot: apt-get install nix-bin failed (log: $dir.log)" >&2
		exit 1
	}
	# Single-user evaluation as root: no build users, no sandbox, never a download (no substituters, no
	# global flake registry).
	mkdir -p "$tmp/etc/nix" "$tmp/nix/store" "$tmp/nix/var/nix"
	cat >"$tmp/etc/nix/nix.conf" <<-'EOF'
		experimental-features = nix-command flakes
		build-users-group =
		sandbox = false
		substituters =
		flake-registry =
		warn-dirty = false
	EOF
	echo "$STAMP" >"$tmp/.tka-stamp"
	mv "$tmp" "$dir"
	exec {lock}>&-
}

# in_root DIR [PATH...] -- CMD...: CMD inside DIR with /proc, /dev, a fresh /tmp and every PATH mounted.
in_root() {
	local dir=$1
	shift
	local binds=()
	while (($#)) && [[ $1 != -- ]]; do
		binds+=("$(realpath -e "$1")")
		shift
	done
	(($#)) || usage
	shift
	local store=${NIX_CHROOT_STORE:-}
	[[ -z $store ]] || mkdir -p "$store"
	unshare --mount --propagation private -- bash -c '
		set -e
		dir=$1; store=$2; n=$3; shift 3
		[[ -z $store ]] || mount --bind "$store" "$dir/nix"
		mount -t proc proc "$dir/proc"
		mount --rbind /dev "$dir/dev"
		mount -t tmpfs tmpfs "$dir/tmp"
		for ((i = 0; i < n; i++)); do
			src=$1; shift
			if [[ -d $src ]]; then mkdir -p "$dir$src"; else mkdir -p "$(dirname "$dir$src")"; touch "$dir$src"; fi
			mount --bind "$src" "$dir$src"
		done
		exec chroot "$dir" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root TERM=dumb \
			NIX_PATH= LANG=C.UTF-8 "$@"
	' _ "$dir" "$store" "${#binds[@]}" "${binds[@]}" "$@"
}

(($# >= 2)) || usage
cmd=$1 dir=$2
shift 2
case $cmd in
setup) setup "$dir" ;;
run)
	[[ -f $dir/.tka-stamp ]] || {
		echo "nix-chroot: $dir is not set up: run $0 setup $dir" >&2
		exit 1
	}
	in_root "$dir" "$@"
	;;
*) usage ;;
esac
