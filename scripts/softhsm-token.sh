#!/usr/bin/env bash
# softhsm-token.sh DIR LABEL PINFILE
#
# Creates a SoftHSM2 token for a development or operator set-up of Sigil:
#   DIR/softhsm2.conf   SoftHSM2 configuration (file object store)
#   DIR/tokens/         token directory
#   DIR/so-pin          random security-officer PIN (mode 0600), written when
#                       the token is first initialised
#   PINFILE             random user PIN (mode 0600), generated if missing
# and initialises a token labelled LABEL unless one already exists. Running
# it again changes nothing. It prints the line to export SOFTHSM2_CONF.
#
# softhsm2-util only takes PINs as arguments, so they are briefly visible in
# the process list while the token is initialised.
set -euo pipefail

die() {
	echo "softhsm-token.sh: $*" >&2
	exit 1
}

[ "$#" -eq 3 ] || die "usage: softhsm-token.sh DIR LABEL PINFILE"
dir=$1 label=$2 pinfile=$3

[ -n "$label" ] || die "LABEL is empty"
[ "${#label}" -le 32 ] || die "LABEL is longer than 32 characters"
command -v softhsm2-util >/dev/null || die "softhsm2-util not found (install with: apt-get install softhsm2 opensc)"

umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd -P)
conf=$dir/softhsm2.conf

want=$(printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n' "$dir/tokens")
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$want" ]; then
	printf '%s\n' "$want" >"$conf.tmp"
	mv "$conf.tmp" "$conf"
fi
export SOFTHSM2_CONF=$conf

random_pin() {
	od -An -tx1 -N16 /dev/urandom | tr -d ' \n'
}

if [ ! -s "$pinfile" ]; then
	mkdir -p "$(dirname "$pinfile")"
	random_pin >"$pinfile.tmp"
	mv "$pinfile.tmp" "$pinfile"
fi
chmod 600 "$pinfile"
pin=$(cat "$pinfile")
[ "${#pin}" -ge 4 ] || die "PIN in $pinfile is shorter than 4 characters"

token_exists() {
	softhsm2-util --show-slots | awk -v want="$label" '
		/^[ \t]*Label:/ {
			sub(/^[ \t]*Label:[ \t]*/, "")
			sub(/[ \t]+$/, "")
			if ($0 == want) found = 1
		}
		END { exit found ? 0 : 1 }'
}

if token_exists; then
	echo "softhsm-token.sh: token \"$label\" already exists in $dir/tokens" >&2
else
	if [ ! -s "$dir/so-pin" ]; then
		random_pin >"$dir/so-pin"
	fi
	chmod 600 "$dir/so-pin"
	softhsm2-util --init-token --free --label "$label" --pin "$pin" --so-pin "$(cat "$dir/so-pin")" >&2
fi

printf 'export SOFTHSM2_CONF=%q\n' "$conf"
