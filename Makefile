# Two entry points (README): `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv from pyproject.toml first; nothing else needs to be installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_DEB := /usr/share/datasets/fashion-mnist
# dvc stages call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test venv data-source unit nbval clean-venv

venv: $(VENV)/.installed

# pip's index warnings about this machine's absent local mirrors are filtered out.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | { grep -v "is ignored: it is neither" || true; }
	touch $@

# Offline source of Fashion-MNIST (DESIGN.md "Data"): Debian's package, when we may install it.
data-source:
	@if [ ! -d $(FASHION_DEB) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  (apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null)) || \
	  echo "apt-get failed: the data stage will try torchvision's download"; \
	fi

repro: venv data-source
	$(BIN)/dvc repro

# Unit tests, then every chapter notebook at smoke scale under nbval, in one pytest run.
test: venv data-source
	$(BIN)/dvc repro data fashion_classifier
	rm -rf build/nbval
	$(BIN)/python -m kexue.run --scale smoke --prepare-only build/nbval $$($(BIN)/python -c "from kexue.run import SECTIONS; print(*SECTIONS)")
	$(BIN)/python -m pytest tests build/nbval --nbval-lax -p no:cacheprovider

clean-venv:
	rm -rf $(VENV)
