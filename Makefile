# The commands a newcomer needs; see README.md.
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: build demo test bench header install

build:
	cargo build --release

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	cargo bench --bench throughput

# Regenerates include/ws.h from the Rust source (commit the result).
header:
	LIBWS_WRITE_HEADER=1 cargo build

install: build
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh
