#!/usr/bin/env bash
# Builds the committed tree (HEAD) twice with `make`, each time from a copy of its own
# under a different path, with a different HOME and CARGO_HOME, umask, time zone and
# locale, and as another user where that user can run the toolchain, then compares
# the two release binaries byte for byte. Exit 0 and one line with the SHA-256 when
# they are identical; 1 and both sums otherwise.
#
# An auditor verifies a shipped binary the same way: check out the commit it was
# built from, run `make` with the same Rust toolchain (rustc -V is printed below),
# and compare `sha256sum target/release/i2psocks` with the shipped one.
#
# The crates come from the first CARGO_HOME's registry (linked into the second, under
# its own path), so no download is needed when the first has them.
set -euo pipefail

CARGO=${CARGO:-cargo}
repo=$(git rev-parse --show-toplevel)
commit=$(git -C "$repo" rev-parse HEAD)
cargo_home=${CARGO_HOME:-$HOME/.cargo}
work=$(mktemp -d "${TMPDIR:-/tmp}/i2psocks-repro.XXXXXX")
trap 'rm -rf "$work"' EXIT

a=$work/first/i2psocks
b=$work/second/elsewhere/src-copy
mkdir -p "$a" "$b" "$work/home-b/cargo"
git -C "$repo" archive "$commit" | tar -x -C "$a"
git -C "$repo" archive "$commit" | tar -x -C "$b"
ln -s "$cargo_home/registry" "$work/home-b/cargo/registry"
cargo_bin=$(command -v "$CARGO")
# rustup's toolchains stay where they are (found through HOME otherwise).
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}

echo "reproducible: commit $commit; $("$cargo_bin" --version); $(rustc -V)"
(cd "$a" && make CARGO="$cargo_bin" >"$work/first.log" 2>&1) || { cat "$work/first.log"; exit 1; }

# The second build: another user if it can run the toolchain and write its copy.
as=()
if [ "$(id -u)" = 0 ] && setpriv --reuid=nobody --regid=nogroup --clear-groups "$cargo_bin" --version >/dev/null 2>&1; then
	chown -R nobody:nogroup "$work/second" "$work/home-b"
	as=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
	echo "reproducible: second build as nobody"
else
	echo "reproducible: second build as $(id -un) (no other user can run $cargo_bin here), with its own HOME and CARGO_HOME"
fi
(cd "$b" && env HOME="$work/home-b" CARGO_HOME="$work/home-b/cargo" RUSTUP_HOME="$rustup_home" TZ=Pacific/Chatham LC_ALL=C.UTF-8 \
	"${as[@]}" sh -c 'umask 0002; exec make CARGO="$0"' "$cargo_bin" >"$work/second.log" 2>&1) ||
	{ cat "$work/second.log"; exit 1; }

sum_a=$(sha256sum <"$a/target/release/i2psocks" | cut -d' ' -f1)
sum_b=$(sha256sum <"$b/target/release/i2psocks" | cut -d' ' -f1)
if [ "$sum_a" = "$sum_b" ]; then
	echo "reproducible: identical, sha256 $sum_a"
	exit 0
fi
echo "reproducible: DIFFERENT: $sum_a ($a) vs $sum_b ($b)" >&2
exit 1
