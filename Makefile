# Warren: see README.md. `make up` and `make test` are the quick start.
.PHONY: up test bench fuzz fmt lint deps build
deps:
	scripts/deps.sh
build: deps
	cargo build --workspace --release
