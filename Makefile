# selfsup: the two commands of the README, plus helpers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN     = $(VENV)/bin
export HF_HUB_OFFLINE = 1
export PYTHONHASHSEED = 0

.PHONY: demo test install fmnist bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

demo: install          ## pretrain RELICv2 on the built-in data, probe it against random init, write demo-report/
	$(BIN)/selfsup demo --out demo-report

test: install          ## the whole test suite (what CI runs)
	$(BIN)/python -m pytest -q -ra --durations=15

fmnist:                ## Debian's Fashion-MNIST package (needs root)
	@test -d /usr/share/datasets/fashion-mnist || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist)

bench: install fmnist  ## the Fashion-MNIST benchmark recorded in benchmarks/RESULTS.md
	$(BIN)/python benchmarks/fmnist_relicv2.py

clean:
	rm -rf $(VENV) runs demo-report .pytest_cache
