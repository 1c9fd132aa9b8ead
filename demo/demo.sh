#!/usr/bin/env bash
# `make demo`: i2psocks working end to end on one machine, with no I2P router set up.
#
# What it does, in order:
#   1. installs i2pd, curl and python3 if missing (tests/deps.sh: never starts the packaged
#      i2pd service, which would join the real I2P network);
#   2. builds i2psocks (cargo, debug profile: quick to build, fast enough here);
#   3. starts a throwaway I2P router: i2pd as a child process with a fresh data directory
#      under /tmp, on 127.0.0.1 only, with no reseed and no peers, so nothing leaves this
#      machine (the same configuration as the tests, tests/common/i2pd.rs);
#   4. publishes a small demo I2P site: python3's http.server on 127.0.0.1 serving a generated
#      index.html, behind an i2pd server tunnel with a new key (a new .b32.i2p address);
#   5. starts i2psocks with --hops 0 and fetches the site through it with curl;
#   6. prints commands to paste into another terminal, then waits; Ctrl-C stops everything
#      it started and deletes the data directory.
#
# --hops 0 (zero-hop tunnels, no anonymity at all) is needed because a router without
# peers can build no longer tunnels; it is for this demo only. Against a real router run
# i2psocks with its defaults (3 hops).
#
# DEMO_ONESHOT=1 exits after the fetch instead of waiting (used to test this script).
# DEMO_PORT picks the SOCKS port (default 4447, or a free one if 4447 is taken).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ONESHOT=${DEMO_ONESHOT:-0}
# Deadlines, in seconds.
SAM_UP_TIMEOUT=15     # i2pd exec -> SAM answers HELLO (measured ~0.05 s)
READY_TIMEOUT=120     # i2psocks' SAM session (about 20 s on i2pd 2.45)
FETCH_TIMEOUT=120     # the site's tunnels and lease set, then the first fetch
STOP_GRACE=5          # SIGTERM -> SIGKILL

if [ -t 1 ]; then
	say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
else
	say() { printf 'demo: %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# ---- 1. dependencies
missing=()
[ -x /usr/sbin/i2pd ] || command -v i2pd >/dev/null || missing+=(i2pd)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
command -v cargo >/dev/null || die "cargo is needed to build i2psocks (https://rustup.rs)"
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]} (Debian packages; the i2pd system service is not started)"
	bash tests/deps.sh "${missing[@]}"
fi
I2PD=/usr/sbin/i2pd
[ -x "$I2PD" ] || I2PD=$(command -v i2pd)

# ---- 2. build
say "building i2psocks"
cargo build --quiet --locked
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/i2psocks
[ -x "$BIN" ] || die "$BIN was not built"

# ---- everything below is stopped by cleanup()
WORK=$(mktemp -d /tmp/i2psocks-demo.XXXXXX)
PIDS_SOCKS="" PID_I2PD="" PID_HTTP=""

stop_pid() { # pid: SIGTERM, wait up to STOP_GRACE, then SIGKILL
	local pid=$1 i
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < STOP_GRACE * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	trap - EXIT HUP INT PIPE TERM
	echo
	say "stopping i2psocks, i2pd and the demo site; removing $WORK"
	# The proxy first: i2pd 2.45 can hang on SIGTERM while a SAM session is open.
	stop_pid "$PIDS_SOCKS"
	stop_pid "$PID_I2PD"
	stop_pid "$PID_HTTP"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

# Free TCP ports from a range (and UDP at SAM-1, which i2pd binds beside SAM). The router's
# fixed ports stay below the ephemeral range, where a leftover TIME_WAIT could block them.
free_ports() { # count lo hi
	python3 - "$@" <<'EOF'
import random, socket, sys
n, lo, hi = map(int, sys.argv[1:])
def free(port, kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind(("127.0.0.1", port)); return True
    except OSError:
        return False
    finally:
        s.close()
got = []
while len(got) < n:
    p = random.randrange(lo, hi)
    if any(abs(p - q) <= 1 for q in got) or not free(p):
        continue
    if len(got) == 1 and not (free(p - 1) and free(p - 1, socket.SOCK_DGRAM)):
        continue  # the SAM port: i2pd also binds UDP (and we keep TCP) at SAM - 1
    got.append(p)
print(*got)
EOF
}

# ---- 3. the demo site's web server
mkdir -p "$WORK/site" "$WORK/i2pd/tunnels.d"
cat >"$WORK/site/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>i2psocks demo site</title></head>
<body>
<h1>Hello from an I2P site</h1>
<p>This page came from a web server on 127.0.0.1, published as an I2P site by a local
i2pd router, and reached through i2psocks.</p>
<p id="marker">i2psocks-demo-ok</p>
</body></html>
EOF
read -r HTTP_PORT < <(free_ports 1 20000 32000)
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/site" "$HTTP_PORT" \
	>"$WORK/http.log" 2>&1 &
PID_HTTP=$!

# ---- 4. the router
read -r NTCP2_PORT SAM_PORT SOCKS_PORT < <(free_ports 3 20000 32000)
D=$WORK/i2pd
sed -e "s|@DATADIR@|$D|g" -e "s|@NTCP2_PORT@|$NTCP2_PORT|g" -e "s|@SAM_PORT@|$SAM_PORT|g" \
	-e "s|@SOCKS_PORT@|$SOCKS_PORT|g" "$ROOT/tests/fixtures/i2pd-offline.conf" >"$D/i2pd.conf"
# i2pd creates site.dat (a new key) on start. The side being connected to must publish a
# type-1 lease set with ElGamal (i2pd 2.45, offline).
cat >"$D/tunnels.conf" <<EOF
[demo-site]
type = http
host = 127.0.0.1
port = $HTTP_PORT
keys = site.dat
signaturetype = 7
inbound.length = 0
outbound.length = 0
i2cp.leaseSetType = 1
i2cp.leaseSetEncType = 0
EOF
say "starting a throwaway i2pd (offline, 127.0.0.1 only, data in $D)"
(cd "$D" && exec "$I2PD" --datadir="$D" --conf="$D/i2pd.conf" --tunconf="$D/tunnels.conf" \
	--tunnelsdir="$D/tunnels.d" --certsdir=/usr/share/i2pd/certificates \
	</dev/null >"$D/stdout.log" 2>&1) &
PID_I2PD=$!

sam_hello() { # true once SAM answers HELLO
	local reply
	{ exec 3<>"/dev/tcp/127.0.0.1/$SAM_PORT"; } 2>/dev/null || return 1
	printf 'HELLO VERSION MIN=3.1 MAX=3.3\n' >&3
	read -r -t 2 reply <&3 || reply=""
	exec 3<&- 3>&-
	[[ $reply == "HELLO REPLY RESULT=OK"* ]]
}
for ((i = 0; ; i++)); do
	sam_hello && break
	kill -0 "$PID_I2PD" 2>/dev/null || { cat "$D/stdout.log" "$D/i2pd.log" >&2; die "i2pd exited"; }
	((i < SAM_UP_TIMEOUT * 10)) || die "i2pd's SAM bridge did not answer on 127.0.0.1:$SAM_PORT"
	sleep 0.1
done
for ((i = 0; i < 50; i++)); do [ -s "$D/site.dat" ] && break; sleep 0.1; done

# The site's address: base32 of SHA-256 over the public destination (387 bytes plus the
# certificate, whose length is the big-endian u16 at offset 385) at the start of site.dat.
B32=$(python3 - "$D/site.dat" <<'EOF'
import base64, hashlib, sys
k = open(sys.argv[1], "rb").read()
n = 387 + int.from_bytes(k[385:387], "big")
print(base64.b32encode(hashlib.sha256(k[:n]).digest()).decode().lower().rstrip("=") + ".b32.i2p")
EOF
)

# ---- 5. i2psocks
SOCKS_PORT=${DEMO_PORT:-4447}
# SO_REUSEADDR as i2psocks sets it: a TIME_WAIT left by an earlier run does not block it.
if ! python3 -c "import socket as S,sys; s=S.socket(); s.setsockopt(S.SOL_SOCKET, S.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1])))" "$SOCKS_PORT" 2>/dev/null; then
	read -r SOCKS_PORT < <(free_ports 1 20000 32000)
fi
say "starting i2psocks on 127.0.0.1:$SOCKS_PORT (--hops 0: this router has no peers)"
"$BIN" -l "127.0.0.1:$SOCKS_PORT" -s "127.0.0.1:$SAM_PORT" --hops 0 --tunnels 1 \
	2> >(tee "$WORK/i2psocks.log" | sed -u 's/^/    /' >&2) &
PIDS_SOCKS=$!
say "waiting for i2psocks' I2P session (about 20 s on i2pd 2.45)"
for ((i = 0; ; i++)); do
	grep -q 'I2P destination ready' "$WORK/i2psocks.log" 2>/dev/null && break
	kill -0 "$PIDS_SOCKS" 2>/dev/null || die "i2psocks exited"
	((i < READY_TIMEOUT * 10)) || die "no I2P session within $READY_TIMEOUT s"
	sleep 0.1
done

URL="http://$B32/"
say "fetching $URL through i2psocks"
t0=$SECONDS
while :; do
	if page=$(curl -sS --max-time 30 --socks5-hostname "127.0.0.1:$SOCKS_PORT" "$URL" 2>"$WORK/curl.err") &&
		[[ $page == *i2psocks-demo-ok* ]]; then
		break
	fi
	((SECONDS - t0 < FETCH_TIMEOUT)) || { cat "$WORK/curl.err" >&2; die "the demo site did not answer"; }
	sleep 1 # the site's lease set is still being published
done
echo
printf '%s\n' "$page" | sed 's/^/    | /'
echo
say "OK: fetched the demo I2P site through i2psocks in $((SECONDS - t0)) s"

cat <<EOF

Try it yourself, in another terminal, while this runs:

    curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://$B32/
    curl --socks4a 127.0.0.1:$SOCKS_PORT http://$B32/
    curl -x socks5h://127.0.0.1:$SOCKS_PORT http://$B32/

Refused locally, never sent anywhere (reply 0x02, "not allowed"):

    curl --socks5-hostname 127.0.0.1:$SOCKS_PORT http://example.com/

EOF

if [ "$ONESHOT" = 1 ]; then
	say "DEMO_ONESHOT=1: done"
	exit 0
fi
say "running; press Ctrl-C to stop i2psocks, the router and the demo site"
while kill -0 "$PIDS_SOCKS" 2>/dev/null && kill -0 "$PID_I2PD" 2>/dev/null; do
	sleep 1
done
tail -n 20 "$WORK/i2psocks.log" "$D/i2pd.log" >&2 || true
die "i2psocks or i2pd stopped unexpectedly"
