"""One other peer of a session: where our stream goes, and its stream coming in.

A duo's jam has one remote; a band of N has N - 1, all on the one socket of
:class:`~nmp_peer.live.peer.Peer`. Each holds what that stream needs of its own: its
keyed session (a handshake per direction, :mod:`nmp_peer.proto.session`), its receive
gate pinned to the remote's address, its playout engine (jitter buffer, concealment
worker, drift reader, loss book) and its counters; the concealer and the worker's
thread are shared by all of them (:class:`~nmp_peer.conceal.worker.ConcealThread`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from nmp_peer.conceal.base import Concealer
from nmp_peer.conceal.worker import ConcealThread
from nmp_peer.live.transport import Address, Endpoint
from nmp_peer.proto.session import Session
from nmp_peer.proto.wire import Packet
from nmp_peer.receiver.gate import REPIN_AFTER_S, PinMode, ReceiveGate
from nmp_peer.receiver.mixer import Strip
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine
from nmp_peer.receiver.snapshot import LevelMeter


@dataclass(frozen=True)
class RemoteSpec:
    """A remote as the session file or ``--peer NAME=HOST:PORT`` names it, with its mix settings."""

    name: str
    endpoint: Endpoint
    gain_db: float = 0.0
    pan: float = 0.0
    mute: bool = False

    def strip(self) -> Strip:
        return Strip(self.name, self.gain_db, self.pan, self.mute)


class RemoteStream:
    def __init__(
        self,
        spec: RemoteSpec,
        addr: Address,
        concealer: Concealer,
        playout: PlayoutConfig,
        thread: ConcealThread,
        *,
        key: bytes | None = None,
        encrypt: bool = True,
        pin: PinMode = "peer",
        repin_after_s: float = REPIN_AFTER_S,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.addr = addr
        self.engine = PlayoutEngine(concealer, playout, worker=thread.lane(concealer, playout.chain_bursts, grace=True))
        self.stats = self.engine.stats
        self.session = Session(key, encrypt=encrypt) if key else None
        self.gate = ReceiveGate(self.stats, peer=addr, session=self.session, pin=pin, repin_after_s=repin_after_s)
        self.level = LevelMeter()
        """The level of what is played from this stream (written by the output callback)."""

    @property
    def ready(self) -> bool:
        """Heard, and (with a key) our session to it open: a file input may start."""
        return bool(self.stats.packets_received) and (self.session is None or self.session.outbound.established)

    def seal(self, packet: Packet) -> bytes | None:
        """The datagram for this remote; None while there is no session for it (keyed)."""
        if self.session is None:
            return packet.serialize()
        sealed = self.session.outbound.seal(packet)
        return None if sealed is None else sealed.serialize()

    def played(self, block: np.ndarray) -> None:
        self.level.update(block)

    def summary(self) -> dict[str, Any]:
        """This remote's counters and gauges, with its name and address (the JSON summary's ``peers``)."""
        d: dict[str, Any] = {"name": self.name, "address": str(self.spec.endpoint)}
        d.update(self.stats.to_dict())
        d["level_dbfs"], d["peak_dbfs"] = self.level.rms_dbfs, self.level.peak_dbfs
        if self.session is not None:
            out = self.session.outbound
            d["handshakes"] = out.handshakes
            d["handshake_ms"] = None if out.last_handshake_s is None else round(1000 * out.last_handshake_s, 2)
        return d

    def status(self) -> str:
        s = self.stats
        rtt = "-" if s.rtt_avg_ms is None else f"{s.rtt_avg_ms:.1f}"
        return (
            f"{self.name}: rx {s.packets_received} lost {s.packets_lost} late {s.packets_late} "
            f"conc {s.packets_concealed} part {s.concealer_partial} miss {s.concealer_misses} "
            f"depth {s.buffer_depth_packets:.1f} lat {s.latency_ms:.1f} rtt {rtt} ms"
            + (" ended" if self.engine.jitter.ended else "")
        )
