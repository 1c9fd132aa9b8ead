#!/usr/bin/env bash
# Runs every test binary, one line each, in lanes: the ones that wait on real routers
# in lanes of their own.
#
# Most of the suite's wall time is binaries that wait on offline routers (a SAM session
# takes 12-20 s to build) while the CPU idles, so those have lanes of their own beside one
# lane for all the rest; run side by side, the suite takes about as long as its longest
# lane. A binary not named in LANES below runs in the last lane: a new test file is never
# left out.
#
#   bash tests/run.sh            build the tests (cargo test --no-run), run every binary
#   CARGO=... bash tests/run.sh  another cargo
#   TEST_PARALLEL=1 bash tests/run.sh  the lanes side by side
#
# The lanes run one after the other unless TEST_PARALLEL=1: side by side on two cores,
# i2pd 2.45's SAM thread segfaulted in the first such run (a freed destination used by
# a stream timer, the fault session churn triggers on i2pd 2.59 too), so running them
# at once stays a choice until the proxy no longer triggers it.
#
# Each binary's output goes to $TARGET/test-logs/<name>.log; a line per binary says how
# it ended and how long it took, and the log of every failed one is printed at the end.
# Exit status: 0 when every binary passed, 1 when one failed, 2 when the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
parallel=${TEST_PARALLEL:-0}
target=${CARGO_TARGET_DIR:-target}
logs=$target/test-logs

# The lanes before the last one, by test binary (tests/<name>.rs). Run side by side, a lane
# whose run times add up to more than the last lane's is what the suite waits on.
LANES=(
	"e2e_i2pd"                  # i2pd 2.45: shared cases, smoke matrix, half-close
	"e2e_i2pd_newer"            # i2pd 2.56 and the newest, in parallel inside
	"stream_end e2e_emissary"   # three routers' stream ends, then emissary
)

# The test binaries cargo builds: "name kind path" per line (kind tells the library's
# unit tests from the binary's, both named after the crate).
list=$(mktemp)
trap 'rm -f "$list"' EXIT
if ! "$cargo" test --locked --no-run --message-format=json-render-diagnostics >"$list.json"; then
	rm -f "$list.json"
	echo "run.sh: the tests did not build" >&2
	exit 2
fi
grep '"reason":"compiler-artifact"' "$list.json" | grep '"profile":{[^}]*"test":true}' | grep '"executable":"/' |
	sed -n 's/.*"target":{"kind":\["\([^"]*\)"\].*"name":"\([^"]*\)".*"executable":"\([^"]*\)".*/\2 \1 \3/p' >"$list"
rm -f "$list.json"
if ! [ -s "$list" ]; then
	echo "run.sh: cargo named no test binary" >&2
	exit 2
fi

mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.status

# run NAME KIND EXE: one binary, its output to its log, "rc seconds" to its status file.
run() {
	local log=$logs/$1-$2.log start=$SECONDS rc
	"$3" >"$log" 2>&1
	rc=$?
	echo "$rc $((SECONDS - start))" >"$logs/$1-$2.status"
	if [ "$rc" = 0 ]; then
		echo "run.sh: $1 ($2) ok in $((SECONDS - start)) s"
	else
		echo "run.sh: $1 ($2) FAILED (exit $rc) after $((SECONDS - start)) s"
	fi
}

# lane NAME...: those binaries, one after the other.
lane() {
	local want kind name exe
	for want in "$@"; do
		while read -r name kind exe; do
			[ "$name" = "$want" ] && run "$name" "$kind" "$exe"
		done <"$list"
	done
}

laned=" "
for l in "${LANES[@]}"; do
	laned+="$l "
	# shellcheck disable=SC2086 # a lane is a list of names
	if [ "$parallel" = 1 ]; then lane $l & else lane $l; fi
done
# The last lane: every binary no lane above names.
while read -r name kind exe; do
	case "$laned" in *" $name "*) continue ;; esac
	run "$name" "$kind" "$exe"
done <"$list"
# Doc tests are not binaries of their own; rustdoc builds and runs them here.
if "$cargo" test --locked --doc >"$logs/doc.log" 2>&1; then
	echo "run.sh: doc tests ok"
else
	echo "run.sh: doc tests FAILED"
	doc_failed=1
fi
wait

failed=0
ran=0
while read -r name kind _; do
	ran=$((ran + 1))
	read -r rc _ <"$logs/$name-$kind.status" 2>/dev/null || rc=missing
	if [ "$rc" != 0 ]; then
		failed=$((failed + 1))
		echo
		echo "======== $name ($kind): exit $rc; its output ($logs/$name-$kind.log):"
		cat "$logs/$name-$kind.log" 2>/dev/null
	fi
done <"$list"
if [ "${doc_failed:-0}" = 1 ]; then
	failed=$((failed + 1))
	echo
	echo "======== doc tests: their output ($logs/doc.log):"
	cat "$logs/doc.log"
fi
echo "run.sh: $ran test binaries and the doc tests, $failed failed, in $SECONDS s"
[ "$failed" = 0 ]
