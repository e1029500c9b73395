#!/usr/bin/env bash
# stamp.sh FILE PLACEHOLDER VALUE [PLACEHOLDER VALUE]...: replaces each placeholder in the binary FILE by
# its value, byte for byte (same length, so the binary's layout is unchanged). The binaries are compiled
# once with fixed placeholders in TKA_BUILD_COMMIT / TKA_BUILD_DATE (src/lib.rs reads them with
# option_env!), so a new commit re-stamps a copy instead of recompiling (nix/binaries.nix).
set -euo pipefail
file=$1
shift
while (($# >= 2)); do
	placeholder=$1 value=$2
	shift 2
	if ((${#placeholder} != ${#value})); then
		echo "stamp.sh: '$value' must have the length of '$placeholder' (${#placeholder})" >&2
		exit 1
	fi
	if [[ ! $placeholder$value =~ ^[A-Za-z0-9:._-]+$ ]]; then
		echo "stamp.sh: only [A-Za-z0-9:._-] can be stamped" >&2
		exit 1
	fi
	if ! LC_ALL=C grep -qaF -- "$placeholder" "$file"; then
		echo "stamp.sh: $file does not contain '$placeholder' (built without it?)" >&2
		exit 1
	fi
	LC_ALL=C sed -i -e "s/$placeholder/$value/g" -- "$file"
	if LC_ALL=C grep -qaF -- "$placeholder" "$file"; then
		echo "stamp.sh: '$placeholder' is still in $file" >&2
		exit 1
	fi
done
