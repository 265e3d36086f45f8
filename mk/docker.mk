# Containers: included from the Makefile (`include mk/docker.mk`).
#
#   make docker-base    the local base image nmp-base:bookworm (debootstrap + python3), for
#                       machines that reach Debian's mirror and PyPI but no container registry
#   make docker-image   the nmp-peer image (docker/Dockerfile) on DOCKER_BASE
#   make docker-test    the container tests (tests/test_docker.py: compose scenarios)
#
# With a registry at hand, skip the local base: make docker-image DOCKER_BASE=python:3.11-slim
# Each target installs what it lacks (docker.io, docker-compose, debootstrap) with apt-get
# and starts dockerd in the background when no daemon answers (log: /tmp/dockerd.log).

DOCKER        ?= docker
DOCKER_IMAGE  ?= nmp-peer:latest
LOCAL_BASE    := nmp-base:bookworm
DOCKER_BASE   ?= $(LOCAL_BASE)
# The Debian mirror apt already uses (deb822 or one-line sources), else Debian's own.
DOCKER_MIRROR ?= $(or $(shell sed -n -e 's|^URIs: *\(http[^ ]*/debian\)/*$$|\1|p' \
                   -e 's|^deb  *\(http[^ ]*/debian\)/* bookworm .*|\1|p' \
                   /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -n 1),http://deb.debian.org/debian)
DOCKER_ROOTFS := build/docker-rootfs
# Legacy builder where BuildKit's buildx plugin is missing (Debian's docker.io has none).
DOCKER_BUILD   = $(shell $(DOCKER) buildx version >/dev/null 2>&1 || echo DOCKER_BUILDKIT=0) $(DOCKER) build
# Extra CAs of this host (a TLS-inspecting proxy in front of PyPI): trusted by pip in the build only.
DOCKER_EXTRA_CA ?= $(wildcard /usr/local/share/ca-certificates/*.crt)

.PHONY: docker-deps docker-daemon docker-base docker-image docker-test

docker-deps:
	@missing=""; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

docker-daemon: docker-deps
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
	  echo "starting dockerd (log: /tmp/dockerd.log)"; \
	  $(SUDO) sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'; \
	  for i in $$(seq 60); do $(DOCKER) info >/dev/null 2>&1 && break; sleep 0.5; done; \
	  $(DOCKER) info >/dev/null 2>&1 || { echo "dockerd did not start: see /tmp/dockerd.log"; exit 1; }; \
	fi

# Debian bookworm (minbase) with python3, its venv module and CA certificates, from the
# host's mirror, imported as an image: about 30-60 s, once.
docker-base: docker-daemon
	@if [ "$(DOCKER_BASE)" != "$(LOCAL_BASE)" ]; then echo "DOCKER_BASE=$(DOCKER_BASE): no local base needed"; \
	elif $(DOCKER) image inspect $(LOCAL_BASE) >/dev/null 2>&1; then echo "$(LOCAL_BASE) exists"; \
	else \
	  set -e; rm -rf $(DOCKER_ROOTFS); mkdir -p $(DOCKER_ROOTFS); \
	  echo "debootstrap bookworm from $(DOCKER_MIRROR) ..."; \
	  $(SUDO) debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	    bookworm $(DOCKER_ROOTFS) $(DOCKER_MIRROR) >build/debootstrap.log 2>&1 \
	    || { tail -n 20 build/debootstrap.log; exit 1; }; \
	  $(SUDO) rm -rf $(DOCKER_ROOTFS)/var/cache/apt/archives/*.deb $(DOCKER_ROOTFS)/var/lib/apt/lists/*; \
	  $(SUDO) tar -C $(DOCKER_ROOTFS) -c . | $(DOCKER) import \
	    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - $(LOCAL_BASE); \
	  $(SUDO) rm -rf $(DOCKER_ROOTFS); \
	fi

# The build context is a tarball of what the image needs (no .venv, no .git). The build
# runs on the host network: its apt-get and pip reach the mirror and PyPI even where the
# default bridge cannot.
docker-image: docker-base
	tar -c -P --exclude=__pycache__ --exclude='*.pyc' pyproject.toml README.md nmp_peer docker \
	  $(DOCKER_EXTRA_CA) --transform='s|^.*/\([^/]*\.crt\)$$|extra-ca/\1|' \
	  | $(DOCKER_BUILD) --network host --build-arg BASE=$(DOCKER_BASE) -f docker/Dockerfile -t $(DOCKER_IMAGE) -

docker-test: setup docker-image
	$(BIN)/python -m pytest -q -m docker tests/test_docker.py
