"""The loopback backend: relay and peers as three processes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from nmp_peer.scenarios.backends.base import (
    Backend,
    LocalParty,
    Party,
    PeerFiles,
    _jam_args,
    _python_cli,
    free_udp_port,
)


class LoopbackBackend(Backend):
    """Three processes on 127.0.0.1, ports apart: no root, no namespaces."""

    name = "loopback"

    def __init__(self, out: Path, safety_s: float) -> None:
        self.out = out
        self.safety_s = safety_s
        self.ports = {"a": free_udp_port(), "b": free_udp_port()}
        self.relay_port = free_udp_port()
        self.parties: list[LocalParty] = []

    def _spawn(self, name: str, argv: list[str]) -> LocalParty:
        party = LocalParty(name, argv, self.out)
        self.parties.append(party)
        return party

    def start_relay(self, relay_args: list[str]) -> Party:
        forward = f"127.0.0.1:{self.ports['b']}"
        return self._spawn(
            "relay",
            [
                *_python_cli("nmp_peer.cli"),
                "impair",
                "--listen",
                f"127.0.0.1:{self.relay_port}",
                "--forward",
                forward,
                *relay_args,
            ],
        )

    def start_peer(self, role: str, run: int, concealer: str, config: str | None, files: PeerFiles) -> Party:
        args = _jam_args(
            f"127.0.0.1:{self.ports[role]}",
            f"127.0.0.1:{self.relay_port}",
            concealer,
            config,
            files,
            role == "a",
            self.safety_s,
        )
        return self._spawn(f"{role}{run if run > 1 else ''}", [*_python_cli("nmp_peer.cli"), *args])

    def close(self) -> None:
        for party in self.parties:
            party.close()
