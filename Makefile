# Two commands on a fresh machine: `make demo` and `make test` (each installs into .venv first).
PYTHON ?= python3
VENV ?= .venv
# The CUDA build of PyTorch; override (e.g. TORCH="torch torchvision") to use your own index or pins.
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean-demo

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The main job end to end on the offline digits data: train both models, corrupt the test set,
# evaluate every head, write reports/demo/index.html. Earlier demo outputs are replaced.
demo: install clean-demo
	$(BIN)/robustgsl train-both --preset demo --out runs/demo
	$(BIN)/robustgsl evaluate runs/demo/ce runs/demo/gsl --corruptions all --out reports/demo

clean-demo:
	rm -rf runs/demo reports/demo

# One pytest-xdist worker per core (at most 4), each test module on one worker so its fixtures are built once.
test: install
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadscope
