#!/usr/bin/env bash
# `make bench`: install what the benchmark needs, build the release binary, run
# benches/proxy.rs, and stop everything it started, pass or fail.
#
#   microsocks  the peer proxy of the loopback rows (Debian package; apt-get as root)
#   i2pd, curl  the offline router of the real-router rows (tests/deps.sh)
#
# Without root a missing tool only skips its rows (the bench says so). The tables
# go to stdout, progress to stderr. Knobs (BENCH_RUNS, BENCH_ONLY, ...) are listed
# at the top of benches/proxy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

if command -v dpkg-query >/dev/null; then
	if ! installed microsocks; then
		if [ "$(id -u)" -eq 0 ]; then
			echo "bench: installing microsocks" >&2
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq microsocks >/dev/null ||
				{ apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq microsocks >/dev/null; } ||
				echo "bench: could not install microsocks; its rows are skipped" >&2
		else
			echo "bench: microsocks missing (apt-get install microsocks as root); its rows are skipped" >&2
		fi
	fi
	if [ -f tests/deps.sh ]; then
		bash tests/deps.sh || echo "bench: tests/deps.sh failed; the real-router rows may be skipped" >&2
	fi
fi

# 1,000 held connections take ~3,000 descriptors in the proxy and in the bench.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 4096 ]; then
	echo "bench: only $(ulimit -n) file descriptors allowed; the hold test may fail" >&2
fi

$CARGO build --release --locked
$CARGO bench --locked --bench proxy --no-run

# The bench and every process it starts (proxies, i2pd, curl) run in a session of
# their own; whatever of it is still alive at the end is stopped, by that group id.
pgid_file=$(mktemp)
cleanup() {
	local pgid
	pgid=$(cat "$pgid_file" 2>/dev/null || true)
	rm -f "$pgid_file"
	[ -n "$pgid" ] || return 0
	if kill -0 -- "-$pgid" 2>/dev/null; then
		kill -TERM -- "-$pgid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 -- "-$pgid" 2>/dev/null || return 0
			sleep 0.1
		done
		echo "bench: leftover processes did not stop on SIGTERM: SIGKILL" >&2
		kill -KILL -- "-$pgid" 2>/dev/null || true
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Measure the binary `cargo build --release` made (the bench profile inherits it).
target_dir=${CARGO_TARGET_DIR:-target}
export I2PSOCKS_BIN=${I2PSOCKS_BIN:-$(realpath "$target_dir/release/i2psocks")}
setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pgid_file" $CARGO bench --locked --bench proxy &
wait $!
