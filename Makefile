# Set-up is part of every target: a fresh clone needs only `make test` or `make demo`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup test test-slow fuzz demo docs bench bench-quick bench-quality bench-fast bench-tables lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch==2.13.0 first: on this machine it is a local CPU wheel; a bare `torch` would pull a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check textcl tests bench

# lint-imports: the one-way layers of [tool.importlinter] in pyproject.toml.
# pytest -n: one worker per core (tests/conftest.py gives each one torch thread); --dist loadscope keeps a
# module on one worker, so a module-scoped fixture (a MiniLM variant set, a 2-process run) is built once.
TEST_WORKERS ?= 2
test: setup lint
	$(VENV)/bin/lint-imports
	$(VENV)/bin/pytest -q -x -n $(TEST_WORKERS) --dist loadscope --durations=10

test-slow: setup
	$(VENV)/bin/pytest -q -m slow --durations=10

fuzz: setup
	TEXTCL_FUZZ_EXAMPLES=2000 $(VENV)/bin/pytest -q tests/data/test_fuzz.py

# docs/recipes.md is generated from the config dataclasses (tests/test_recipe_docs.py checks it is current).
docs: setup
	$(PY) -m textcl.recipe_docs

demo: setup
	$(VENV)/bin/textcl run recipes/quickstart.yaml
	@echo "textcl is installed in $(VENV): run 'source $(VENV)/bin/activate' once in this shell, and the README's textcl commands work as written"

bench: setup
	$(PY) bench/run_all.py --mode full

# BENCHMARKS.md and the README's results block, from bench/records/ alone (tests/bench/test_bench_tables.py
# fails when either is stale). Run it after appending records.
bench-tables: setup
	$(PY) bench/tables.py

bench-quick: setup
	$(PY) bench/run_all.py --mode quick

# Fine-tuned quality, textcl vs sentence-transformers (hours on 2 CPU cores; on one GPU use JOBS=12).
# Writes bench/results/quality/results.jsonl (resumable); copy it to bench/records/ to table it.
JOBS ?= 1
bench-quality: setup
	$(PY) bench/bench_quality.py --mode full --jobs $(JOBS)

# Query-side NFCorpus recipe, 3 seeds (about 10 minutes each on 2 idle cores); copy
# bench/results/fast/results.jsonl to bench/records/fast.jsonl to table it in BENCHMARKS.md.
bench-fast: setup
	$(PY) bench/bench_fast.py --mode full

clean:
	rm -rf $(VENV) out .pytest_cache .import_linter_cache .grimp_cache
