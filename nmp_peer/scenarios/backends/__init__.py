"""Where a scenario's two peers and relay run: the loopback, network namespaces, containers.

``open_backend`` opens one by name for a run folder; ``backend_unavailable`` says why one
cannot run here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nmp_peer.scenarios.backends.base import Backend
from nmp_peer.scenarios.backends.docker import DockerBackend
from nmp_peer.scenarios.backends.loopback import LoopbackBackend
from nmp_peer.scenarios.backends.netns import NetnsBackend

BACKENDS = ("loopback", "netns", "docker")


@contextmanager
def open_backend(
    name: str, out: Path, safety_s: float, *, image: str = "nmp-peer:latest", netem: str | None = None
) -> Iterator[Backend]:
    """The backend ``name`` for one run folder; everything it made is removed on exit."""
    if name == "loopback":
        backend: Backend = LoopbackBackend(out, safety_s)
    elif name == "netns":
        backend = NetnsBackend(out, safety_s)
    elif name == "docker":
        backend = DockerBackend(out, safety_s, image=image, netem=netem)
    else:
        raise ValueError(f"unknown backend {name!r}; choose {', '.join(BACKENDS)}")
    with backend:
        yield backend


def backend_unavailable(name: str, image: str = "nmp-peer:latest") -> str | None:
    """None when ``name`` can run here, else the precise reason."""
    if name == "loopback":
        return None
    if name == "netns":
        from nmp_peer.scenarios.backends.netns import netns_unavailable

        return netns_unavailable()
    if name == "docker":
        from nmp_peer.scenarios.backends.docker import docker_unavailable

        return docker_unavailable(image)
    return f"unknown backend {name!r}; choose {', '.join(BACKENDS)}"


__all__ = ["BACKENDS", "backend_unavailable", "open_backend"]
