# Two entry points a fresh machine needs: `make demo` and `make test`. Both set everything up first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup demo test test-fast lint

# torch 2.14.1 / torchvision 0.29.1 is the pair whose wheels install together here (Python 3.11).
$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(FMNIST):
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

setup: $(VENV)/.installed $(FMNIST)

demo: setup
	$(VENV)/bin/accelerate launch --config_file recipes/accelerate/cpu.yaml -m vitwarm.train --config recipes/fmnist_demo.yaml

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile tests  # two workers, each test file whole on one (its fixtures once)

# The inner loop: everything not marked slow (no trainer subprocesses), under 3 minutes on 2 cores.
test-fast: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check .
