# Two commands on a fresh Debian machine:  make demo   and   make test
# Both install what they need: Debian packages (apt-get), then a venv with the Python packages.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= opus,lab,train,test,lint,uvloop
# iproute2: `ip` and `tc` for the network-namespace tests (they skip, saying so, without it);
# chromium: the headless browser the web monitor's test drives over its DevTools protocol (no driver needed)
APT_PKGS := python3-venv libopus0 libportaudio2 libsndfile1 fluidsynth fluid-soundfont-gm timgm6mb-soundfont iproute2 jackd2 \
  chromium
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   := $(VENV)/.installed

# Training data and the GAN (the [train] extra): one command each, both resumable.
# CONFIG: a file or a shipped name (nmp_peer/conf/train, its experiments/); STEPS=N sets
# the config's optim.steps (the cosine horizon and the last step).
DATA    ?= data/synth
HOURS   ?= 20
N_VALID ?= 12
N_EVAL  ?= 24
JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
RUN     ?= data/gan-run
CONFIG  ?= nmp_peer/conf/train/bin2bin_v2.toml
STEPS   ?=

.PHONY: setup system-deps demo test test-fast lint bench clean train-data train

setup: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "warning: not Debian; install these yourself:$$missing"; fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $@

demo: setup
	$(BIN)/nmp-peer demo --out out/demo

test: setup
	$(BIN)/python -m pytest -q -m "not docker"

# the quick part (under a minute): no real-time jams, subprocess runs or long simulations
test-fast: setup
	$(BIN)/python -m pytest -q -m "not docker and not slow"

# ruff (lint and format), mypy, and the import contracts of pyproject.toml (the tiers)
lint: setup
	$(BIN)/ruff check nmp_peer tests benchmarks
	$(BIN)/ruff format --check nmp_peer tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: setup
	$(BIN)/nmp-peer bench --path receive --json
	$(BIN)/nmp-peer bench --method repeat --json
	$(BIN)/nmp-peer bench --method lpc --json

# the third SoundFont of the training set (docs/model-card.md)
train-data: APT_PKGS += musescore-general-soundfont
train-data: setup
	$(BIN)/python -c "from nmp_peer.synth import build_set as b; \
	  [print(b('$(DATA)/' + split, split, jobs=$(JOBS), **size)) for split, size in \
	   (('train', dict(hours=$(HOURS))), ('valid', dict(n_clips=$(N_VALID))), ('eval', dict(n_clips=$(N_EVAL))))]"

train: train-data
	$(BIN)/python -m nmp_peer.train.train --config $(CONFIG) $(if $(STEPS),--steps $(STEPS)) --data $(DATA) --out $(RUN)
	$(BIN)/python -m nmp_peer.train.export --checkpoint $(RUN)/best.pt --out $(RUN)/bin2bin_v2.onnx
	$(BIN)/python -m nmp_peer.train.evaluate --clips $(DATA)/eval --model $(RUN)/bin2bin_v2.onnx

clean:
	rm -rf $(VENV) out .pytest_cache

include mk/docker.mk
