# The two set-up commands of the README: `make demo` and `make test`. Both run the one-time set-up first.
.PHONY: setup demo test lint

setup:
	scripts/setup.sh

demo: setup
	.venv/bin/ioa demo

test: setup
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/pytest -q

lint:
	.venv/bin/ruff check src tests benchmarks
