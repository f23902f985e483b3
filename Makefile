# Two commands: `make run` (set up, ingest the samples, start the page) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export ANONYMIZED_TELEMETRY := False

# torch: the CPU build. A bare `torch` requirement resolves to a multi-GB CUDA build on Linux,
# so the CPU one is installed first and the project's loose `torch>=2.2` is then satisfied.
# GPU users: `make TORCH_SPEC="torch" venv` (or install their CUDA build into .venv first).
TORCH_SPEC ?= torch==2.13.0

# llama-cpp-python compiles llama.cpp at install. Its default -march=native build dies with SIGSEGV
# in ggml_backend_amx_mul_mat on CPUs with AMX (llama.cpp #20824), so build without native tuning.
# pip's wheel cache ignores CMAKE_ARGS: --no-cache-dir makes sure these flags are really used.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
LLAMA_STAMP := $(VENV)/.llama-cpp-$(LLAMA_CPP_VERSION)-$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-8)

.PHONY: venv system-deps run chat test lint typecheck pytest bench bench-query bench-load eval clean-venv

venv: $(VENV)/.installed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(VENV)/.torch: | $(VENV)/bin/python
	$(PIP) install "$(TORCH_SPEC)"
	touch $@

$(LLAMA_STAMP): | $(VENV)/bin/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) install --no-cache-dir --force-reinstall \
		--no-deps "llama-cpp-python==$(LLAMA_CPP_VERSION)"
	rm -f $(VENV)/.llama-cpp-*; touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch $(LLAMA_STAMP)
	$(PIP) install -e '.[dev]'
	touch $@

# The page on http://127.0.0.1:8501 (.streamlit/config.toml: loopback only, no usage statistics).
run: venv
	$(VENV)/bin/privatellm ingest ingest/
	$(VENV)/bin/streamlit run ui/app.py

chat: venv
	$(VENV)/bin/privatellm ingest ingest/
	$(VENV)/bin/privatellm chat

test: venv system-deps lint typecheck pytest

# What the suite needs that pip cannot install, from Debian's apt, only when missing: Chromium
# for the browser test (driven through Playwright's driver; Playwright's own browser download is
# never used, there is no network at test time) and a CJK font, without which the page draws the
# Chinese sample's name as empty boxes. PRIVATELLM_CHROMIUM names another Chromium instead.
system-deps:
	@missing=""; \
	[ -n "$${PRIVATELLM_CHROMIUM:-}" ] || command -v chromium >/dev/null || missing="chromium"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-noto-cjk"; \
	[ -n "$$missing" ] || exit 0; \
	command -v apt-get >/dev/null || { echo "make test needs: $$missing" >&2; exit 1; }; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	set -ex; \
	$$sudo apt-get update -q; \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q $$missing

lint: venv
	$(VENV)/bin/ruff check privatellm ui tests benchmarks scripts
	$(VENV)/bin/ruff format --check privatellm ui tests benchmarks scripts

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv system-deps
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: venv
	$(PIP) install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/ingest.py $(BENCH_ARGS)

# The dev set (../shared/eval/dev) is read in place, never copied into the repo.
DEV ?= ../shared/eval/dev
EVAL_DATA ?= $(HOME)/.cache/privatellm-eval

eval: venv
	$(VENV)/bin/privatellm --data-dir $(EVAL_DATA) eval $(DEV)/qa.jsonl --docs $(DEV)/docs \
		-c dev --mode dense --mode lexical --mode hybrid --retrieval-only $(EVAL_ARGS)

bench-query: venv
	$(PIP) install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/query.py --source-data $(EVAL_DATA) --source-collection dev \
		--qa $(DEV)/qa.jsonl $(BENCH_ARGS)

# 8 clients x 50 questions to `privatellm serve` while it ingests 100 more documents.
bench-load: venv
	$(PIP) install --quiet -e '.[dev,bench]'
	$(PY) benchmarks/load.py --qa $(DEV)/qa.jsonl --docs $(DEV)/docs $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
