# selfsup: the two commands of the README, plus helpers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
export HF_HUB_OFFLINE = 1
export PYTHONHASHSEED = 0

.PHONY: demo test test-fast lint install fmnist bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install          ## pretrain RELICv2 on the built-in data, probe it against random init, write demo-report/
	$(BIN)/selfsup demo --out demo-report

test: install          ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q -ra --durations=15

test-fast: install     ## the unit tests, for the edit-test loop (no end-to-end CLI runs, nothing marked slow)
	SELFSUP_FAST=1 $(BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

lint: install          ## ruff (style, import order, private imports) and mypy on the package
	$(BIN)/ruff check selfsup tests benchmarks examples
	$(BIN)/mypy selfsup

fmnist:                ## Debian's Fashion-MNIST package (needs root)
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist)

# the headline benchmark, claim 2 of benchmarks/RESULTS.md: every method's Fashion-MNIST learning curve against raw
# pixels, random init and supervised training (about 5.5 hours of training on 2 cores; resumable: run it again after an
# interruption). A part: make bench BENCH_ARGS="--only relicv2_fmnist --long 0 --no-supervised"
BENCH_ARGS ?=
bench: install fmnist  ## the Fashion-MNIST learning curves of benchmarks/RESULTS.md (claim 2), into runs/bench/
	$(BIN)/python benchmarks/fmnist_curves.py --resume --out runs/bench/fmnist_curves $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs demo-report .pytest_cache
