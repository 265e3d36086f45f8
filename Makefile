# Two commands on a fresh Debian machine:  make demo   and   make test
# Both install what they need: Debian packages (apt-get), then a venv with the Python packages.

PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= opus,lab,train,test
APT_PKGS := python3-venv libopus0 libportaudio2 libsndfile1 fluidsynth fluid-soundfont-gm timgm6mb-soundfont
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP   := $(VENV)/.installed

.PHONY: setup system-deps demo test bench clean

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

bench: setup
	$(BIN)/nmp-peer bench --path receive --json
	$(BIN)/nmp-peer bench --method repeat --json
	$(BIN)/nmp-peer bench --method lpc --json

clean:
	rm -rf $(VENV) out .pytest_cache

include mk/docker.mk
