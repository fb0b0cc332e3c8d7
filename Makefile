# The two commands of the README: `make run` (the demo channel) and `make test` (every test).
ARGS ?=

.PHONY: run test setup lint bench

setup:
	@scripts/setup.sh

run: setup
	cargo build --release --bin steadycast
	./target/release/steadycast demo $(ARGS)

lint: setup
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

test: lint
	@scripts/setup.sh --browser
	cargo test --workspace

bench: setup
	cargo build --release --bin steadycast
	./target/release/steadycast bench
	cargo bench -p manifest
