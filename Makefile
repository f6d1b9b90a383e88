# The two commands of the README, and a few more. Each installs what it needs.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV_RUN := uv run --frozen --no-sync

.PHONY: up down status test test-chaos test-fast test-vllm lint format bench install

install:
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv \
		|| python3 -m pip install --quiet uv
	@uv sync --frozen --quiet

## make up: NATS, PostgreSQL and Redis (embedded where none is reachable), the
## control plane, local nodes and a demo deployment; prints a curl to try.
up: install
	@$(UV_RUN) cic-local up

down: install
	@$(UV_RUN) cic-local down

status: install
	@$(UV_RUN) cic-local status

## make test: every test, the end-to-end one included, on real NATS/PostgreSQL/Redis.
test: install
	@$(UV_RUN) pytest

## make test-chaos: faults and attacks on the local platform under load from the openai
## client; prints the table of figures (requests failed, events lost, duplicates, orphans).
## The network cut needs iptables (installed here as root with apt; skipped without it).
test-chaos: install
	@command -v iptables >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& command -v apt-get >/dev/null 2>&1 \
		&& apt-get install -y -qq iptables >/dev/null 2>&1; } || true
	@$(UV_RUN) pytest tests/chaos -m chaos

## make test-vllm: the node agent on a real vLLM (CPU build) serving a tiny generated
## Llama; builds .cic/vllm-env first (about 2 GB, once). Opt-in: not part of make test.
test-vllm: install
	@bash deploy/vllm/setup-env.sh
	@CIC_VLLM_PYTHON=$(CURDIR)/.cic/vllm-env/bin/python $(UV_RUN) pytest tests/vllm -v

test-fast: install
	@$(UV_RUN) pytest tests/unit

lint: install
	@$(UV_RUN) ruff check .
	@$(UV_RUN) ruff format --check .
	@$(UV_RUN) mypy

format: install
	@$(UV_RUN) ruff check --fix .
	@$(UV_RUN) ruff format .
