"""The impairment relay's ground-truth log: one ``Record`` per datagram, written as JSON
lines (or CSV for a ``.csv`` path) and read back by ``read_log``."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from nmp_peer.jsonio import OutputFileError
from nmp_peer.proto.wire import Packet, WireError

LOG_FIELDS = ("t_ms", "dir", "index", "seq", "stream_id", "end", "bytes", "action", "delays_ms")
ACTIONS = ("deliver", "drop", "duplicate", "reorder", "rate-drop", "outage", "no-peer", "foreign")
LOST_ACTIONS = ("drop", "rate-drop", "outage")


@dataclass(frozen=True)
class Record:
    """Ground truth for one datagram: what the relay did with it."""

    t_ms: float
    dir: str
    index: int
    seq: int
    stream_id: int
    end: bool
    """An end-of-stream notice, not audio."""
    bytes: int
    action: str
    delays_ms: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["delays_ms"] = list(self.delays_ms)
        return d


def packet_ids(data: bytes) -> tuple[int, int, bool]:
    """(sequence number, stream id, end-of-stream notice?) of an nmp-peer packet, (-1, -1, False) for anything else."""
    try:
        packet = Packet.parse(data)
    except WireError:
        return -1, -1, False
    return packet.seq, packet.stream_id, packet.end


class _LogWriter:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise OutputFileError(f"cannot write relay log {self.path}: {exc.strerror or exc}") from None
        self._csv = csv.writer(self._file) if self.path.suffix.lower() == ".csv" else None
        if self._csv is not None:
            self._csv.writerow(LOG_FIELDS)

    def write(self, r: Record) -> None:
        if self._csv is not None:
            self._csv.writerow(
                (
                    r.t_ms,
                    r.dir,
                    r.index,
                    r.seq,
                    r.stream_id,
                    int(r.end),
                    r.bytes,
                    r.action,
                    ";".join(f"{d:g}" for d in r.delays_ms),
                )
            )
        else:
            self._file.write(json.dumps(r.to_dict(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a relay log (JSON lines or CSV) back into dicts with the JSON types."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        if path.suffix.lower() != ".csv":
            return [json.loads(line) for line in f if line.strip()]
        rows = []
        for row in csv.DictReader(f):
            rows.append(
                {
                    "t_ms": float(row["t_ms"]),
                    "dir": row["dir"],
                    "index": int(row["index"]),
                    "seq": int(row["seq"]),
                    "stream_id": int(row["stream_id"]),
                    "end": row.get("end") == "1",
                    "bytes": int(row["bytes"]),
                    "action": row["action"],
                    "delays_ms": [float(d) for d in row["delays_ms"].split(";") if d],
                }
            )
        return rows


def audio_lost(records: list[dict[str, Any]], direction: str) -> int:
    """The audio packets the relay lost in ``direction`` after the first one it delivered:
    what a receiver that listened first counts ``packets_lost``. Not audio: PINGs and PONGs,
    handshakes (seq -1), end-of-stream notices, and what came before the relay knew a peer."""
    audio = [r for r in records if r["dir"] == direction and r["seq"] >= 0 and not r["end"]]
    audio = [r for r in audio if r["action"] != "no-peer"]
    first = next((i for i, r in enumerate(audio) if r["action"] not in LOST_ACTIONS), len(audio))
    return sum(r["action"] in LOST_ACTIONS for r in audio[first:])
