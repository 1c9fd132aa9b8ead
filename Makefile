# i2psocks build glue for GNU make. Cargo does the building; this file adds the
# conventional targets packagers expect and the checks CI runs.
#
#   make                    release binary in target/release/i2psocks
#   make demo               a throwaway offline I2P router, a demo site, i2psocks, curl
#   make test               test dependencies (tests/deps.sh), then every test
#                           (tests/run.sh: a line per test binary)
#   make soak               test dependencies, then tests/soak.rs: identity churn through
#                           the proxy on i2pd 2.45, 2.56 and the newest, one after the
#                           other, SOAK_SECONDS (600) each
#   make check              rustfmt, clippy and the man page lint
#   make install            binary, man page, systemd unit and OpenRC script
#   make reproducible       two release builds in two directories, compared
#   make uninstall          removes what install put there (same PREFIX/DESTDIR)
#   make clean              cargo clean
#   make bench              bench/run.sh: benches/proxy.rs against its peers
#   make fuzz               the cargo-fuzz targets in fuzz/, FUZZ_SECONDS each
#
# install does not build: run `make` first (as the user who owns the tree),
# then `make install` (as root, or with DESTDIR for a staged install).

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
# The service files: systemd looks for units under $(PREFIX)/lib/systemd/system
# for /usr and /usr/local alike; OpenRC only in /etc/init.d.
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INITDIR ?= $(SYSCONFDIR)/init.d
DESTDIR ?=
CARGO ?= cargo
MANDOC ?= mandoc

# Cargo honours CARGO_TARGET_DIR; follow it so install finds the binary.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN = $(TARGET_DIR)/release/i2psocks
MAN = man/i2psocks.8
UNIT = dist/systemd/i2psocks.service
OPENRC = dist/openrc/i2psocks

.PHONY: all bench demo test soak check install uninstall clean fuzz reproducible

# A reproducible release build: the paths that would otherwise end up in the
# binary (panic locations of our code and of the crates) are rewritten to fixed
# ones, so the same commit gives the same bytes wherever it is built and by
# whom (check it with `make reproducible`). std's paths are /rustc/<hash>
# already. Cargo's own trim-paths would do this but is not stable yet.
CARGO_HOME_DIR = $(or $(CARGO_HOME),$(HOME)/.cargo)
REMAP = --remap-path-prefix=$(CURDIR)=/build/i2psocks --remap-path-prefix=$(CARGO_HOME_DIR)=/build/cargo

all:
	RUSTFLAGS="$(strip $(RUSTFLAGS) $(REMAP))" $(CARGO) build --release --locked

# Everything it starts stays in the foreground and stops on Ctrl-C; DEMO_ONESHOT=1 makes
# it exit after the first fetch (see demo/demo.sh).
demo:
	@bash demo/demo.sh

# Tests use the debug profile on purpose: the release profile (fat LTO, one
# codegen unit) re-links every test binary slowly on a small machine, while the
# run time is bound by the router (20 s per SAM session, ~9 MiB/s streaming),
# not by the proxy's speed. Debug builds also trap integer overflow.
# The slowloris test holds 1,000 client sockets at once: raise the soft
# descriptor limit toward the hard one where it is lower (a no-op here).
test:
	CARGO="$(CARGO)" bash tests/deps.sh
	ulimit -n 8192 2>/dev/null || ulimit -n "$$(ulimit -Hn)"; CARGO="$(CARGO)" bash tests/run.sh

# The soak of make test (tests/soak.rs: 120 s on the newest i2pd) made longer and run on
# every i2pd the tests have; --nocapture shows its progress and the summary tables.
SOAK_SECONDS ?= 600
SOAK_ROUTERS ?= 2.45,trixie,sid

soak:
	CARGO="$(CARGO)" bash tests/deps.sh
	SOAK_SECONDS="$(SOAK_SECONDS)" SOAK_ROUTERS="$(SOAK_ROUTERS)" \
		$(CARGO) test --locked --test soak -- --nocapture

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(MANDOC) -Tlint -W warning $(MAN)

# Fuzzing: the libFuzzer targets in fuzz/ (a cargo-fuzz project with its own
# workspace and lockfile) run one after the other, FUZZ_SECONDS each, starting
# from the committed seeds (fuzz/seeds/<target>) plus what earlier runs kept
# (fuzz/corpus/<target>, not committed). A finding stops the run and leaves
# the input in fuzz/artifacts/<target>/; replay it with
# `cd fuzz && cargo +nightly fuzz run <target> <file>`.
# Needs `cargo install cargo-fuzz --locked`. cargo-fuzz passes nightly-only
# flags (-Zsanitizer and friends): a nightly toolchain is used when rustup has
# one, otherwise RUSTC_BOOTSTRAP=1 makes the stable compiler accept them (both
# tried with cargo-fuzz 0.13.2). One process, one core: libFuzzer's default;
# -jobs/-fork would start more. The crate forbids unsafe code, so the default
# is no sanitizer, which runs about five times as many inputs per second;
# FUZZ_SANITIZER=address turns ASan back on.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= socks_chunks sam_reply target udp_header forwarded
FUZZ_SANITIZER ?= none
FUZZ_CARGO ?= $(if $(shell rustup toolchain list 2>/dev/null | grep '^nightly'),$(CARGO) +nightly,RUSTC_BOOTSTRAP=1 $(CARGO))

fuzz:
	cd fuzz && for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t && \
		$(FUZZ_CARGO) fuzz run --sanitizer $(FUZZ_SANITIZER) $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# Installs its peers (microsocks, i2pd) when run as root, builds the release
# binary, prints markdown tables and stops every process it started.
bench:
	CARGO="$(CARGO)" bash bench/run.sh

install:
	@test -f $(BIN) || { echo "make: $(BIN) is missing; run make first" >&2; exit 1; }
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/i2psocks
	install -m 0644 $(MAN) $(DESTDIR)$(MANDIR)/man8/i2psocks.8
	mkdir -p $(DESTDIR)$(UNITDIR) $(DESTDIR)$(INITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' $(UNIT) > $(DESTDIR)$(UNITDIR)/i2psocks.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/i2psocks.service
	sed 's|@BINDIR@|$(BINDIR)|g' $(OPENRC) > $(DESTDIR)$(INITDIR)/i2psocks
	chmod 0755 $(DESTDIR)$(INITDIR)/i2psocks

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/i2psocks $(DESTDIR)$(MANDIR)/man8/i2psocks.8
	rm -f $(DESTDIR)$(UNITDIR)/i2psocks.service $(DESTDIR)$(INITDIR)/i2psocks

# Two release builds of this tree, each in a copy of its own under another
# path (and as another user where it can), must give the same bytes: the
# binary an auditor builds is the one shipped. tests/reproducible.sh says how.
reproducible:
	CARGO="$(CARGO)" bash tests/reproducible.sh

clean:
	$(CARGO) clean
