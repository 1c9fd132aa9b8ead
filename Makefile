# i2psocks build glue for GNU make. Cargo does the building; this file adds the
# conventional targets packagers expect and the checks CI runs.
#
#   make                    release binary in target/release/i2psocks
#   make test               test dependencies (tests/deps.sh), then every test
#   make check              rustfmt, clippy and the man page lint
#   make install            binary and man page under $(DESTDIR)$(PREFIX)
#
# install does not build: run `make` first (as the user who owns the tree),
# then `make install` (as root, or with DESTDIR for a staged install).

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DESTDIR ?=
CARGO ?= cargo
MANDOC ?= mandoc

# Cargo honours CARGO_TARGET_DIR; follow it so install finds the binary.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BIN = $(TARGET_DIR)/release/i2psocks
MAN = man/i2psocks.8

.PHONY: all test check install uninstall clean bench

all:
	$(CARGO) build --release --locked

# Tests use the debug profile on purpose: the release profile (fat LTO, one
# codegen unit) re-links every test binary slowly on a small machine, while the
# run time is bound by the router (20 s per SAM session, ~9 MiB/s streaming),
# not by the proxy's speed. Debug builds also trap integer overflow.
test:
	bash tests/deps.sh
	$(CARGO) test --locked

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
	$(MANDOC) -Tlint -W warning $(MAN)

# Installs its peers (microsocks, i2pd) when run as root, builds the release
# binary, prints markdown tables and stops every process it started.
bench:
	CARGO="$(CARGO)" bash bench/run.sh

install:
	@test -f $(BIN) || { echo "make: $(BIN) is missing; run make first" >&2; exit 1; }
	mkdir -p $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/i2psocks
	install -m 0644 $(MAN) $(DESTDIR)$(MANDIR)/man8/i2psocks.8

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/i2psocks $(DESTDIR)$(MANDIR)/man8/i2psocks.8

clean:
	$(CARGO) clean
