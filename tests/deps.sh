#!/usr/bin/env bash
# Test dependencies for i2psocks on Debian: installs what `make test` needs and is missing.
#
#   i2pd    the real I2P router the end-to-end tests start (offline, on loopback, as a child
#           process with its own throwaway datadir; see tests/common/i2pd.rs)
#   curl    the real SOCKS client the tests drive
#   mandoc  the man page linter used by `make check`
#   systemd man-db  systemd-analyze verifies and rates dist/systemd/i2psocks.service
#           (tests/install.rs; nothing is booted or started), and its verify reads the
#           unit's man: link with man
#
# The compatibility matrix (tests/e2e/compat.rs) drives these real clients through i2psocks:
#   netcat-openbsd                 nc -X 5 / -N -X 5 / -X 4 -x (and ssh's ProxyCommand)
#   socat                          SOCKS4A: with piped input, which half-closes when the
#                                  input ends (the case --half-close-wait exists for)
#   proxychains4                   LD_PRELOAD socksifier running curl and wget
#   wget                           run under proxychains4
#   python3-requests python3-socks requests with PySocks, socks5h:// (Debian's /usr/bin/python3)
#   git                            clone over HTTP with http.proxy=socks5h://
#   torsocks iproute2              torsocks running curl, ssh and git (RESOLVE, virtual
#                                  addresses) in a private network namespace (ip link)
#   openssh-server openssh-client  sshd published as an I2P server tunnel, ssh through nc
#   chromium                       headless browser: --proxy-server=socks5://, screenshot
#   strace                         to see what a client really sends when a row fails
#   microsocks                     a second SOCKS5 server, to tell client from proxy faults
#                                  (these two are for diagnosing by hand; no test runs them)
#
# The second real router (tests/common/emissary.rs, tests/e2e_emissary.rs):
#   emissary-cli 0.4.0             an independent SAM 3.2 implementation in Rust. No distribution
#                                  packages it, so it is built from crates.io (a package registry,
#                                  reachable where the tests run) with `cargo install --locked`,
#                                  once per machine, into its own root: $EMISSARY_ROOT, by default
#                                  /opt/i2psocks-tests/emissary-0.4.0, where the tests look too.
#                                  About 4 minutes and 1.2 GB of memory on two cores; skipped when
#                                  that version is there already.
#   libssl-dev pkg-config          what its build links against (openssl-sys, libz-sys, cc)
#   zlib1g-dev gcc
#
# The newer i2pd routers (tests/common/i2pd.rs, Build::Trixie and Build::Sid):
#   i2pd-trixie                    Debian 13's i2pd (2.56) and i2pd-sid, unstable's newest
#   i2pd-sid                       (2.59 or later). Both need a newer glibc than Debian 12
#                                  has, so they are not installed: the .debs of i2pd and of
#                                  the libraries it needs (apt-cache depends, recursively) are
#                                  downloaded with a private apt configuration (its own
#                                  sources list naming that suite on the mirror the machine's
#                                  apt sources use, its own lists, cache and an empty status)
#                                  and unpacked with dpkg-deb -x into $ROUTERS_ROOT/i2pd-<suite>,
#                                  by default under /opt/i2psocks-tests, once per machine
#                                  (skipped when there and runnable). The tests run that tree's
#                                  i2pd through its own dynamic loader. The system's apt state
#                                  and its installed packages stay as they were. About 10 MB
#                                  downloaded per router.
#
# A package that cannot be installed is an error (exit 1), never a skipped test.
# With arguments, only those packages are considered (`make demo` needs just i2pd, curl and
# python3): `bash tests/deps.sh i2pd curl python3`; `emissary-cli` among them builds it.
#
# Idempotent: with everything present it does nothing and prints nothing. It never lets the
# packaged i2pd system service run: that service would join the real I2P network with the
# online default config, and tests must never touch the internet.
set -euo pipefail

PACKAGES=(
	i2pd curl mandoc systemd man-db
	netcat-openbsd socat proxychains4 wget python3-requests python3-socks git torsocks iproute2
	openssh-server openssh-client chromium strace microsocks
	emissary-cli i2pd-trixie i2pd-sid
)
if [ $# -gt 0 ]; then
	PACKAGES=("$@")
fi
POLICY=/usr/sbin/policy-rc.d
EMISSARY_VERSION=0.4.0
EMISSARY_ROOT=${EMISSARY_ROOT:-/opt/i2psocks-tests/emissary-$EMISSARY_VERSION}
EMISSARY_BUILD_DEPS=(libssl-dev pkg-config zlib1g-dev gcc)
ROUTERS_ROOT=${ROUTERS_ROOT:-/opt/i2psocks-tests}

# emissary-cli is no Debian package: it is built below, after the packages its build needs.
build_emissary=false
suites=()
debian=()
for p in "${PACKAGES[@]}"; do
	if [ "$p" = emissary-cli ]; then
		build_emissary=true
		debian+=("${EMISSARY_BUILD_DEPS[@]}")
	elif [ "${p#i2pd-}" != "$p" ]; then
		suites+=("${p#i2pd-}")
	else
		debian+=("$p")
	fi
done
PACKAGES=("${debian[@]}")

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# The service, if the package started it anyway (e.g. a policy-rc.d that did not exist on a
# systemd machine). Only the packaged instance is touched: it runs from its pidfile as user
# i2pd, while test routers are plain children of the test binary.
stop_packaged_service() {
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
		if systemctl is-active --quiet i2pd 2>/dev/null; then
			echo "deps.sh: stopping the packaged i2pd service" >&2
			systemctl disable --now i2pd >/dev/null 2>&1 || systemctl stop i2pd
		fi
	fi
	local pidfile=/run/i2pd/i2pd.pid pid
	if [ -s "$pidfile" ]; then
		pid=$(cat "$pidfile")
		if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
			echo "deps.sh: stopping the packaged i2pd service (pid $pid)" >&2
			# Not the init script: its fallback stops every process named i2pd.
			start-stop-daemon --stop --quiet --pidfile "$pidfile" --retry=TERM/30/KILL/5 || true
		fi
	fi
}

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
		echo "deps.sh: install them as root without starting the i2pd service, e.g.:" >&2
		echo "  printf '#!/bin/sh\\nexit 101\\n' > $POLICY && chmod +x $POLICY" >&2
		echo "  apt-get install -y ${missing[*]}; rm $POLICY" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	created_policy=false
	if [ ! -e "$POLICY" ]; then
		# Exit status 101 = "action forbidden": postinst then does not start the service.
		printf '#!/bin/sh\nexit 101\n' >"$POLICY"
		chmod 755 "$POLICY"
		created_policy=true
		trap 'rm -f "$POLICY"' EXIT
	fi
	echo "deps.sh: installing ${missing[*]}" >&2
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if $created_policy; then
		rm -f "$POLICY"
		trap - EXIT
	fi
fi

if [ "$(id -u)" -eq 0 ]; then
	stop_packaged_service
fi

emissary_installed() {
	"$EMISSARY_ROOT/bin/emissary-cli" --version 2>/dev/null | grep -qx "emissary-cli $EMISSARY_VERSION"
}

if $build_emissary && ! emissary_installed; then
	cargo=${CARGO:-cargo}
	if ! mkdir -p "$EMISSARY_ROOT" 2>/dev/null || [ ! -w "$EMISSARY_ROOT" ]; then
		echo "deps.sh: cannot write $EMISSARY_ROOT; as root (or with EMISSARY_ROOT elsewhere) run:" >&2
		echo "  $cargo install emissary-cli --version $EMISSARY_VERSION --no-default-features --locked --root $EMISSARY_ROOT" >&2
		exit 1
	fi
	echo "deps.sh: building emissary-cli $EMISSARY_VERSION from crates.io into $EMISSARY_ROOT (a few minutes)" >&2
	# Its own temporary target directory, not this project's.
	env -u CARGO_TARGET_DIR nice -n 10 "$cargo" install emissary-cli --version "$EMISSARY_VERSION" \
		--no-default-features --locked --quiet --root "$EMISSARY_ROOT"
	emissary_installed || { echo "deps.sh: $EMISSARY_ROOT/bin/emissary-cli is not $EMISSARY_VERSION" >&2; exit 1; }
fi

# The first Debian archive (not the security one) named in the machine's apt sources, deb822
# or one-line style: the newer suites come from the mirror this machine already trusts.
debian_mirror() {
	{
		sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' || true
		sed -n 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*\).*/\2/p' \
			/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true
	} | grep -v -e security -e '^$' | head -n 1 || true
}

# i2pd of one Debian suite, unpacked with its libraries into $ROUTERS_ROOT/i2pd-<suite>.
# Runnable means: its own loader starts it and it prints its version.
router_dir() { echo "$ROUTERS_ROOT/i2pd-$1"; }
router_runs() {
	local dir
	dir=$(router_dir "$1")
	local out
	out=$("$dir/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$dir/usr/lib/x86_64-linux-gnu" \
		"$dir/usr/bin/i2pd" --version 2>/dev/null) || return 1
	[ "${out#i2pd version }" != "$out" ]
}
fail() { echo "deps.sh: $*" >&2; exit 1; }
fetch_router() {
	local suite=$1 dir apt mirror pkgs
	dir=$(router_dir "$suite")
	apt="$ROUTERS_ROOT/apt-$suite"
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources* to fetch i2pd from $suite"
	mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/debs" || fail "cannot write $apt"
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt/sources.list"
	local opts=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=-
		-o "Dir::State::lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Dir::State::status=/dev/null
		-o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root)
	echo "deps.sh: fetching i2pd from Debian $suite into $dir" >&2
	apt-get "${opts[@]}" -qq update >/dev/null 2>&1 || fail "apt-get update of Debian $suite from $mirror failed"
	apt-cache "${opts[@]}" show i2pd >/dev/null 2>&1 || fail "Debian $suite has no i2pd package"
	# i2pd and every library it loads: its Depends, followed down (adduser and friends are
	# install-time only; the rest are libraries).
	pkgs=$(apt-cache "${opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
		--no-breaks --no-replaces --no-enhances --no-pre-depends i2pd |
		grep -v -e '^ ' -e '^<' | grep -e '^i2pd$' -e '^lib' -e '^zlib' | sort -u)
	rm -f "$apt/debs"/*.deb
	# shellcheck disable=SC2086
	(cd "$apt/debs" && apt-get "${opts[@]}" -qq download $pkgs >/dev/null 2>&1) ||
		fail "could not download from Debian $suite: $(echo $pkgs)"
	rm -rf "$dir.new" && mkdir -p "$dir.new"
	for deb in "$apt/debs"/*.deb; do
		dpkg-deb -x "$deb" "$dir.new" || fail "cannot unpack $deb"
	done
	rm -rf "$dir" && mv "$dir.new" "$dir" && rm -rf "$apt"
	router_runs "$suite" || fail "i2pd from Debian $suite does not start with its own loader and libraries in $dir: $(
		"$dir/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$dir/usr/lib/x86_64-linux-gnu" \
			"$dir/usr/bin/i2pd" --version 2>&1 | head -n 1)"
}
for suite in ${suites[@]+"${suites[@]}"}; do
	router_runs "$suite" || fetch_router "$suite"
done
