#!/usr/bin/env bash
# Runs every test binary, one line each: the ones that wait on real routers one after the
# other, beside the rest.
#
# Most of the suite's wall time is binaries that wait on offline routers (a SAM session
# takes 12-20 s to build) while the CPU idles, so the rest of the suite runs beside them
# and the whole takes about as long as the router binaries alone. A binary not named in
# ROUTER_LANES below is in the rest: a new test file is never left out.
#
#   bash tests/run.sh                  the router lanes in turn, beside the soak and the
#                                      rest (default)
#   TEST_PARALLEL=0 bash tests/run.sh  everything one after the other
#   TEST_PARALLEL=2 bash tests/run.sh  the router lanes side by side too
#   CARGO=... bash tests/run.sh        another cargo
#
# Router lanes side by side are not the default: on two cores, i2pd 2.45's SAM thread
# segfaulted in the first such run (a freed destination used by a stream timer, the fault
# session churn triggers on i2pd 2.59 too; doc/i2pd-sam-churn-crash.md). The soak has a
# router of its own and mostly waits (a few requests a second), so it runs beside the lanes
# rather than adding its minutes to theirs.
#
# Each binary's output goes to $TARGET/test-logs/<name>.log; a line per binary says how
# it ended and how long it took, and the log of every failed one is printed at the end.
# Exit status: 0 when every binary passed, 1 when one failed, 2 when the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
parallel=${TEST_PARALLEL:-1}
target=${CARGO_TARGET_DIR:-target}
logs=$target/test-logs

# The binaries that start real routers, by lane (tests/<name>.rs).
ROUTER_LANES=(
	"e2e_i2pd e2e_udp"          # i2pd 2.45: shared cases, smoke matrix, half-close; UDP
	"e2e_i2pd_newer"            # i2pd 2.56 and the newest, in parallel inside
	"stream_end e2e_emissary"   # three routers' stream ends, then emissary
)
# Identity churn on the newest i2pd for SOAK_SECONDS (tests/soak.rs), beside the lanes.
BESIDE=(soak)

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

# routers: the router lanes, side by side when TEST_PARALLEL=2, else one after the other.
routers() {
	local l
	for l in "${ROUTER_LANES[@]}"; do
		# shellcheck disable=SC2086 # a lane is a list of names
		if [ "$parallel" = 2 ]; then lane $l & else lane $l; fi
	done
	wait
}

# rest: every binary no router lane names, then the doc tests (not binaries of their own;
# rustdoc builds and runs them).
rest() {
	local laned=" ${ROUTER_LANES[*]} ${BESIDE[*]} " name kind exe
	while read -r name kind exe; do
		case "$laned" in *" $name "*) continue ;; esac
		run "$name" "$kind" "$exe"
	done <"$list"
	if "$cargo" test --locked --doc >"$logs/doc.log" 2>&1; then
		echo "run.sh: doc tests ok"
		echo 0 >"$logs/doc.status"
	else
		echo "run.sh: doc tests FAILED"
		echo 1 >"$logs/doc.status"
	fi
}

if [ "$parallel" = 0 ]; then
	routers
	lane "${BESIDE[@]}"
	rest
else
	routers &
	lane "${BESIDE[@]}" &
	rest
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
if [ "$(cat "$logs/doc.status" 2>/dev/null)" != 0 ]; then
	failed=$((failed + 1))
	echo
	echo "======== doc tests: their output ($logs/doc.log):"
	cat "$logs/doc.log"
fi
echo "run.sh: $ran test binaries and the doc tests, $failed failed, in $SECONDS s"
[ "$failed" = 0 ]
