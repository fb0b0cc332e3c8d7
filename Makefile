# The two commands of the README: `make run` (the demo channel) and `make test` (every test).
SHELL := /bin/bash
ARGS ?=

.PHONY: run test setup lint bench cluster

setup:
	@scripts/setup.sh

run: setup
	cargo build --release --bin steadycast
	./target/release/steadycast demo $(ARGS)

# A whole cluster on loopback (PostgreSQL, three Garage nodes, three steadycast nodes, HAProxy,
# the nginx shield) playing the demo channel; Ctrl-C stops it.
cluster: setup
	@scripts/setup.sh --services
	cargo build --release --bin steadycast
	scripts/cluster.sh

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

# The last line totals every test binary's results ("N passed, N failed").
test: lint
	@scripts/setup.sh --browser --services
	@mkdir -p target
	set -o pipefail; cargo test --workspace 2>&1 | tee target/test.log
	@awk '/^test result:/ { p += $$4; f += $$6 } END { printf "%d passed, %d failed\n", p, f }' target/test.log

bench: setup
	cargo build --release --bin steadycast
	./target/release/steadycast bench
	cargo bench -p manifest
	cargo bench -p failover
