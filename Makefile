# Two entry points (README): `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv from pyproject.toml first; nothing else needs to be installed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_DEB := /usr/share/datasets/fashion-mnist
# dvc stages call `python`: make it the venv's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: repro test venv system-deps clean-venv

venv: $(VENV)/.installed

# pip's index warnings about this machine's absent local mirrors are filtered out. Not -q: the
# first install takes minutes, and a line per package shows it is moving.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/pip install --progress-bar off --disable-pip-version-check -e '.[test]' 2>&1 | { grep --line-buffered -v "is ignored: it is neither" || true; }
	touch $@

# Debian packages, installed when we may (root with apt-get; otherwise say what is missing):
# the offline source of Fashion-MNIST (DESIGN.md "Data"), the two Bible translations of chapter 05
# and Nave's Topical Bible (SWORD modules read by libsword-utils' mod2vpl/mod2imp), and Chromium for the browser test.
DEBS := dataset-fashion-mnist libsword-utils sword-text-kjv sword-text-web sword-dict-naves chromium chromium-driver
SWORD_MODS := /usr/share/sword/mods.d
system-deps:
	@missing=""; \
	[ -d $(FASHION_DEB) ] || missing="$$missing dataset-fashion-mnist"; \
	command -v mod2vpl >/dev/null || missing="$$missing libsword-utils"; \
	[ -f $(SWORD_MODS)/engKJV2006eb.conf ] || missing="$$missing sword-text-kjv"; \
	[ -f $(SWORD_MODS)/engWEB2015eb.conf ] || missing="$$missing sword-text-web"; \
	[ -f $(SWORD_MODS)/nave.conf ] || missing="$$missing sword-dict-naves"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq && apt-get install -y -qq $$missing >/dev/null)) || \
	    echo "apt-get failed for$$missing: the data stage will try torchvision's download; chapter 05 needs the SWORD texts; the browser test needs chromium"; \
	  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

repro: venv system-deps
	$(BIN)/dvc repro

# Unit tests, the browser test of the committed reports, then every chapter notebook at smoke
# scale under nbval, in one pytest run. The data stage rebuilds data/ (content-addressed: same
# hashes as dvc.lock); the feature classifier, the U-Net and chapter 05's trained scores are committed, so
# nothing else is rebuilt.
test: venv system-deps
	$(BIN)/dvc repro data bible_pairs nave_topics
	rm -rf build/nbval
	$(BIN)/python -m kexue.run --scale smoke --prepare-only build/nbval $$($(BIN)/python -c "from kexue.run import SECTIONS; print(*SECTIONS)")
	$(BIN)/python -m pytest tests build/nbval --nbval-lax -p no:cacheprovider

clean-venv:
	rm -rf $(VENV)
