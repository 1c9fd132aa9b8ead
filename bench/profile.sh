#!/usr/bin/env bash
# Profile the i2psocks process of one bench section with perf (cpu-clock
# sampling: works in VMs without hardware counters).
#
#   bench/profile.sh bulk|cycles|held [seconds]   → perf report on stdout
#
# Runs only the i2psocks row of that section (BENCH_ROWS=i2psocks, with
# direct as the client-side reference), attaches `perf record -p` to the proxy
# while it is measured, and prints the top symbols, kernel and user. Needs
# linux-perf (Debian: apt-get install linux-perf) and the same setup as
# bench/run.sh; for repeatable instruction counts use BENCH_WRAP instead, e.g.
#   BENCH_WRAP="env MALLOC_ARENA_MAX=4 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p" \
#     BENCH_ONLY=cycles BENCH_ROWS=i2psocks BENCH_RUNS=1 cargo bench --bench proxy
set -euo pipefail
cd "$(dirname "$0")/.."
section=${1:?usage: bench/profile.sh bulk|cycles|held [seconds]}
secs=${2:-8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo build --release --locked
cargo bench --locked --bench proxy --no-run
target_dir=${CARGO_TARGET_DIR:-target}
export I2PSOCKS_BIN=${I2PSOCKS_BIN:-$(realpath "$target_dir/release/i2psocks")}
BENCH_ONLY=$section BENCH_ROWS=i2psocks BENCH_RUNS=${BENCH_RUNS:-3} BENCH_PROFILE_PAUSE=1 \
	cargo bench --locked --bench proxy >"$out/tables" 2>"$out/log" &
bench=$!
pid=
for _ in $(seq 300); do
	pid=$(sed -n 's/.*i2psocks pid Some(\([0-9]*\)).*/\1/p' "$out/log" | head -1)
	[ -n "$pid" ] && break
	sleep 0.1
done
[ -n "$pid" ] || { cat "$out/log" >&2; exit 1; }
perf record -q -e cpu-clock -g -p "$pid" -o "$out/perf.data" -- sleep "$secs" 2>/dev/null || true
wait "$bench" || true
cat "$out/tables"
echo "## perf: i2psocks (pid $pid), $section, ${secs} s, flat by symbol"
perf report -i "$out/perf.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null |
	grep -v '^#' | grep -v '^$' | head -${TOP:-40}
