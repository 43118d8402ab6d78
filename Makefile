# The commands a newcomer needs; see README.md.
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: build demo test bench header install fuzz sanitize soak ci

# The soname (scripts/soname.txt) and what linking libws.a takes
# (scripts/static-libs.txt), each written once.
SONAME := $(shell grep -v -e '^\#' -e '^$$' scripts/soname.txt)

# Also leaves the soname link ($(SONAME)) beside libws.so, so that programs
# linked with -L target/release run from there (LD_LIBRARY_PATH or rpath).
build:
	cargo build --release
	ln -sfn libws.so target/release/$(SONAME)

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/bench.sh

# Regenerates include/ws.h from the Rust source (commit the result).
header:
	LIBWS_WRITE_HEADER=1 cargo build

install: build
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh

# Runs each fuzz target for FUZZ_SECONDS (default 60); installs cargo-fuzz
# and the pinned nightly toolchain when missing. See scripts/fuzz.sh.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS="$(FUZZ_SECONDS)" scripts/fuzz.sh

# Hundreds of connections at a time through faults for SOAK_SECONDS
# (default 300): invariants, and no growth of memory, fds or threads. See
# tests/soak.rs and scripts/soak.sh.
SOAK_SECONDS ?= 300
soak:
	SOAK_SECONDS="$(SOAK_SECONDS)" scripts/soak.sh

# Runs tests under AddressSanitizer (UBSan too on the C programs),
# ThreadSanitizer and miri; SANITIZE="asan tsan" picks some. Needs rustup
# (installs the nightly toolchain, rust-src and miri). See scripts/sanitize.sh.
SANITIZE ?=
sanitize:
	scripts/sanitize.sh $(SANITIZE)

# Everything CI checks, in its order, once what it needs is installed
# (.ci/run installs it, then runs this): formatting, lints, the suite,
# each fuzz target for 30 s, the sanitizers and a 60 s soak. Under
# CI=true (the default here) a test whose peer is missing fails.
ci: export CI ?= true
ci:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(MAKE) test
	$(MAKE) fuzz FUZZ_SECONDS=30
	$(MAKE) sanitize
	$(MAKE) soak SOAK_SECONDS=60
