"""The impairment relay on 127.0.0.1: what it forwards is exactly what its log says."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import music_like

from nmp_peer.audio_io import read_audio, write_audio
from nmp_peer.live.transport import Endpoint
from nmp_peer.netsim.impair import Impairment
from nmp_peer.netsim.link import UDP_IP_OVERHEAD_BYTES, TokenBucket
from nmp_peer.netsim.loss import BernoulliLoss, GilbertElliottLoss, burst_lengths, make_loss_model
from nmp_peer.netsim.relay import Relay
from nmp_peer.netsim.relaylog import read_log
from nmp_peer.proto.wire import Packet, PayloadType

COPIES = {"deliver": 1, "reorder": 1, "duplicate": 2, "drop": 0, "rate-drop": 0, "outage": 0}


def nmp(seq: int, stream_id: int = 7, frames: int = 512) -> bytes:
    return Packet(PayloadType.PCM16, 1, stream_id, seq, seq * 512, bytes(2 * frames)).serialize()


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)


@dataclass
class Exchange:
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    at_a: list[bytes]
    at_b: list[bytes]
    at_foreign: list[bytes] = field(default_factory=list)

    def direction(self, name: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.records if r["dir"] == name and r["index"] >= 0), key=lambda r: r["index"])


def exchange(
    make_relay: Callable[[Endpoint, Path], Relay],
    log: Path,
    from_a: Sequence[bytes],
    *,
    from_b: Sequence[bytes] = (),
    b_first: Sequence[bytes] = (),
    foreign: dict[int, bytes] | None = None,
    pace_s: float = 0.001,
    settle_s: float = 0.15,
) -> Exchange:
    """Side A sends ``from_a`` (and B answers with ``from_b``, one for one) through a relay."""

    async def run() -> Exchange:
        loop = asyncio.get_running_loop()
        socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        sides = [await loop.create_datagram_endpoint(Collector, sock=sock) for sock in socks]
        (_, a), (_, b), (_, f) = sides
        ta, tb, tf = socks  # sent on directly: asyncio's sendto skips empty datagrams
        relay = make_relay(Endpoint("127.0.0.1", tb.getsockname()[1]), log)
        await relay.start()
        task = loop.create_task(relay.run())
        try:
            for data in b_first:
                tb.sendto(data, relay.address)
                await asyncio.sleep(pace_s)
            for i, data in enumerate(from_a):
                ta.sendto(data, relay.address)
                if i < len(from_b):
                    tb.sendto(from_b[i], relay.address)
                if foreign and i in foreign:
                    tf.sendto(foreign[i], relay.address)
                await asyncio.sleep(pace_s)
            await asyncio.sleep(settle_s)
        finally:
            relay.stop()
            summary = await task
            for t, _ in sides:
                t.close()
        return Exchange(summary, read_log(log), a.got, b.got, f.got)

    return asyncio.run(run())


def seq_of(data: bytes) -> int:
    return Packet.parse(data).seq


def expected_copies(records: list[dict[str, Any]]) -> Counter[int]:
    out: Counter[int] = Counter()
    for r in records:
        out[r["seq"]] += COPIES[r["action"]]
    return +out


@pytest.mark.parametrize("model", ["bernoulli", "gilbert"])
def test_forwarded_datagrams_are_exactly_those_the_log_says(model: str, tmp_path: Path) -> None:
    def impairment() -> Impairment:
        loss = BernoulliLoss(0.1, seed=11) if model == "bernoulli" else GilbertElliottLoss(0.1, 3.0, seed=11)
        return Impairment(
            loss, delay_ms=1.0, jitter_ms=1.0, reorder=0.05, duplicate=0.05, seed=11, packet_interval_s=0.003
        )

    n = 300
    ex = exchange(
        lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, impairment(), log=log),
        tmp_path / "r.jsonl",
        [nmp(i) for i in range(n)],
    )
    a2b = ex.direction("a2b")
    assert [r["seq"] for r in a2b] == list(range(n))
    assert Counter(seq_of(d) for d in ex.at_b) == expected_copies(a2b)
    # The relay's decisions are the lab's: same seed, same packet order, same fate and delays.
    offline = impairment()
    for r in a2b:
        d = offline.next_decision()
        assert (r["action"], r["delays_ms"]) == (d.action, [round(1000.0 * x, 3) for x in d.delays_s])
    actions = Counter(r["action"] for r in a2b)
    counters = ex.summary["a2b"]
    assert actions["drop"] == counters["dropped"] > 10
    assert actions["duplicate"] == counters["duplicated"] > 0 and actions["reorder"] == counters["reordered"] > 0
    assert counters["copies_sent"] == len(ex.at_b)
    if model == "gilbert":
        assert burst_lengths([r["action"] == "drop" for r in a2b]).max() >= 2


def test_the_same_seed_gives_the_same_log_and_another_seed_another(tmp_path: Path) -> None:
    def run(seed: int) -> list[tuple[int, str, list[float]]]:
        imp = Impairment(
            make_loss_model("gilbert", 0.2, 2.0, seed=seed), jitter_ms=2.0, reorder=0.1, duplicate=0.1, seed=seed
        )
        ex = exchange(
            lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, imp, log=log),
            tmp_path / f"{seed}.jsonl",
            [nmp(i) for i in range(120)],
            pace_s=0.0005,
            settle_s=0.1,
        )
        return [(r["seq"], r["action"], r["delays_ms"]) for r in ex.direction("a2b")]

    first = run(5)
    assert run(5) == first
    assert [a for _, a, _ in run(6)] != [a for _, a, _ in first]


def test_duplicates_and_reorders_arrive_when_and_as_often_as_logged(tmp_path: Path) -> None:
    imp = Impairment(None, delay_ms=1.0, jitter_ms=0.5, reorder=0.15, duplicate=0.15, seed=3, packet_interval_s=0.004)
    n = 200
    ex = exchange(
        lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, imp, log=log),
        tmp_path / "r.jsonl",
        [nmp(i) for i in range(n)],
    )
    a2b = ex.direction("a2b")
    arrivals = [seq_of(d) for d in ex.at_b]
    assert Counter(arrivals) == expected_copies(a2b)
    for r in a2b:
        if r["action"] == "duplicate":
            assert arrivals.count(r["seq"]) == 2
    # Copies leave at arrival + logged delay: B gets them in that order (ties aside).
    due = {r["seq"]: sorted(r["t_ms"] + d for d in r["delays_ms"]) for r in a2b}
    seen: Counter[int] = Counter()
    times = []
    for seq in arrivals:
        times.append(due[seq][seen[seq]])
        seen[seq] += 1
    assert all(t1 <= t2 + 0.01 for t1, t2 in zip(times, times[1:], strict=False))
    overtaken = sum(
        1
        for r in a2b
        if r["action"] == "reorder" and r["seq"] + 1 < n and arrivals.index(r["seq"]) > arrivals.index(r["seq"] + 1)
    )
    assert overtaken >= 10


def test_token_bucket_passes_its_rate_and_drops_what_overflows_the_queue() -> None:
    size = 1000 - UDP_IP_OVERHEAD_BYTES  # 8000 bits on the wire: 8 ms at 1 Mbit/s
    below = TokenBucket(1000.0, queue_ms=50.0, burst_bytes=1500)
    assert all(below.admit(0.010 * i, size + UDP_IP_OVERHEAD_BYTES) == 0.0 for i in range(500))
    above = TokenBucket(1000.0, queue_ms=50.0, burst_bytes=1500)
    waits = [above.admit(0.004 * i, 1000) for i in range(1000)]  # offered: 2 Mbit/s
    admitted = [w for w in waits if w is not None]
    assert max(admitted) <= 0.050
    assert abs(len(admitted) - 500) <= 8  # 4 s at 1 Mbit/s + the queue
    assert TokenBucket(1000.0).admit(0.0, 5000) == 0.0  # larger than the burst: passes alone
    with pytest.raises(ValueError, match="rate_kbps"):
        TokenBucket(0.0)


def test_rate_limit_drops_what_exceeds_it_and_spaces_the_rest(tmp_path: Path) -> None:
    rate_kbps = 300.0
    ex = exchange(
        lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, Impairment(), rate_kbps=rate_kbps, log=log),
        tmp_path / "r.jsonl",
        [nmp(i) for i in range(100)],
        pace_s=0.002,
        settle_s=0.1,
    )
    a2b = ex.direction("a2b")
    kept = [r for r in a2b if r["action"] == "deliver"]
    dropped = [r for r in a2b if r["action"] == "rate-drop"]
    assert len(kept) + len(dropped) == 100 and ex.summary["a2b"]["rate_dropped"] == len(dropped) >= 50
    assert sorted(seq_of(d) for d in ex.at_b) == [r["seq"] for r in kept]
    assert all(r["delays_ms"][0] <= 50.0 for r in kept)
    bits_ms = 8.0 * (len(nmp(0)) + UDP_IP_OVERHEAD_BYTES) / rate_kbps
    departures = [r["t_ms"] + r["delays_ms"][0] for r in kept]
    # after the 1-packet burst
    assert all(b - a >= bits_ms - 0.01 for a, b in zip(departures[1:], departures[2:], strict=False))


def test_an_outage_drops_everything_in_its_window_both_ways(tmp_path: Path) -> None:
    ex = exchange(
        lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, Impairment(), outage=(0.1, 0.1), log=log),
        tmp_path / "r.jsonl",
        [nmp(i) for i in range(150)],
        from_b=[nmp(i, stream_id=9) for i in range(150)],
        pace_s=0.002,
    )
    first = ex.summary["first_packet_ms"]
    for direction in ("a2b", "b2a"):
        records = ex.direction(direction)
        inside = [r for r in records if 100.001 <= r["t_ms"] - first < 199.999]
        outside = [r for r in records if not 99.999 <= r["t_ms"] - first < 200.001]
        assert len(inside) >= 10 and all(r["action"] == "outage" for r in inside)
        assert all(r["action"] == "deliver" for r in outside)
        assert ex.summary[direction]["outage_dropped"] == sum(r["action"] == "outage" for r in records)
    got_b = {seq_of(d) for d in ex.at_b}
    assert got_b == {r["seq"] for r in ex.direction("a2b") if r["action"] == "deliver"}


def test_garbage_is_relayed_as_it_is_with_seq_minus_one_and_strangers_get_nothing(tmp_path: Path) -> None:
    bad_magic = b"XX" + nmp(2)[2:]
    garbage = [b"", b"hello", os.urandom(100), nmp(1)[:-1], bad_magic, b"x" * 60000, b"\x00" * 24]
    datagrams = [*garbage, nmp(3)]
    ex = exchange(
        lambda fwd, log: Relay(Endpoint("127.0.0.1", 0), fwd, Impairment(), log=log),
        tmp_path / "r.jsonl",
        datagrams,
        foreign={0: nmp(99), 4: b"intruder"},
    )
    assert ex.at_b == datagrams
    a2b = ex.direction("a2b")
    assert [r["seq"] for r in a2b] == [-1] * len(garbage) + [3]
    assert [r["stream_id"] for r in a2b[:-1]] == [-1] * len(garbage)
    assert [r["bytes"] for r in a2b] == [len(d) for d in datagrams]
    assert ex.summary["a2b"]["not_nmp"] == len(garbage)
    assert ex.summary["foreign"] == 2 and [r["action"] for r in ex.records if r["dir"] == "foreign"] == ["foreign"] * 2
    assert ex.at_a == [] and ex.at_foreign == []


def test_replies_go_to_side_a_only_with_their_own_impairment(tmp_path: Path) -> None:
    def make(fwd: Endpoint, log: Path) -> Relay:
        return Relay(
            Endpoint("127.0.0.1", 0),
            fwd,
            Impairment(BernoulliLoss(0.3, seed=1), seed=1),
            Impairment(BernoulliLoss(0.3, seed=2), seed=2),
            log=log,
        )

    ex = exchange(
        make,
        tmp_path / "r.jsonl",
        [nmp(i) for i in range(100)],
        from_b=[nmp(i, stream_id=9) for i in range(100)],
        b_first=[nmp(1000 + i, stream_id=9) for i in range(5)],
    )
    assert ex.summary["no_peer"] == 5
    b2a = ex.direction("b2a")
    assert [r["seq"] for r in b2a] == list(range(100))  # the 5 sent before A was known went nowhere
    assert Counter(seq_of(d) for d in ex.at_a) == expected_copies(b2a)
    assert Counter(seq_of(d) for d in ex.at_b) == expected_copies(ex.direction("a2b"))
    drops = [[r["action"] == "drop" for r in ex.direction(d)] for d in ("a2b", "b2a")]
    assert drops[0] != drops[1] and all(sum(x) > 10 for x in drops)
    assert ex.at_foreign == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--loss", "2"], "--loss must be in [0, 1]"),
        (["--outage", "5"], "is not START:SECONDS"),
        (["--outage", "1:-2"], "non-negative"),
        (["--rate-kbps", "0"], "--rate-kbps must be positive"),
        (["--loss-model", "foo"], "unknown --loss-model"),
        (["--loss-model", "trace"], "needs --trace"),
        (["--loss-model", "trace", "--trace", "/no/such.txt"], "no such file"),
        (["--jitter-dist", "cauchy"], "unknown --jitter-dist"),
        (["--loss", "0.9", "--loss-model", "gilbert", "--burst", "1"], "impossible with --burst 1"),
        (["--reorder", "0.7", "--duplicate", "0.7"], "must not exceed 1"),
        (["--listen", "nowhere"], "HOST:PORT"),
        (["--forward", "0.0.0.0:5000"], "must name a host"),
        (["--duration", "0"], "--duration must be positive"),
        (["--log", "/proc/no/such/dir/r.jsonl"], "cannot write relay log"),
    ],
)
def test_impair_command_refuses_bad_values_in_one_line(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from nmp_peer.cli import main

    options = {"--listen": "127.0.0.1:0", "--forward": "127.0.0.1:9", "--duration": "0.01"}
    options.update(zip(args[::2], args[1::2], strict=False))
    argv = ["impair", *[x for pair in options.items() for x in pair]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nmp-peer: error: ") and fragment in err[0], err


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_impair_command_relays_logs_and_stops_cleanly_on_a_signal(sig: str, tmp_path: Path) -> None:
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind(("127.0.0.1", 0))
    b.settimeout(5.0)
    log = tmp_path / "r.csv"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nmp_peer.cli",
            "impair",
            "--listen",
            "127.0.0.1:0",
            "--forward",
            "{}:{}".format(*b.getsockname()),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = p.stderr.readline()
        port = int(line.split()[3].rpartition(":")[2])
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(20):
            a.sendto(nmp(i), ("127.0.0.1", port))
            assert seq_of(b.recv(4096)) == i
        a.sendto(b"not nmp", ("127.0.0.1", port))
        assert b.recv(4096) == b"not nmp"
        p.send_signal(getattr(signal, sig))
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0 and "Traceback" not in err, err
    summary = json.loads(out)
    assert summary["a2b"]["received"] == summary["a2b"]["copies_sent"] == 21 and summary["a2b"]["not_nmp"] == 1
    records = read_log(log)
    assert [r["seq"] for r in records] == [*range(20), -1] and {r["action"] for r in records} == {"deliver"}


@pytest.mark.slow
def test_two_jams_through_the_relay_count_the_losses_it_logged(tmp_path: Path) -> None:
    """jam A ↔ relay (5 % bursty loss both ways) ↔ jam B: the scenarios' loopback backend, three processes on 127.0.0.1.

    B listens before A starts, so its jitter buffer starts at the first packet the relay
    delivered; it stops while A still sends. Its ``packets_lost`` (slots whose packet
    never came) is then the relay's A→B drops between those two points; late packets did
    arrive and are counted apart. A outlives B, so it got every datagram the relay sent it.
    Every check of ``truth.check_counters`` must hold (received, duplicates, late and
    foreign against the log too).
    """
    from nmp_peer.scenarios.backends import open_backend
    from nmp_peer.scenarios.jam import JamPlan, run_jam
    from nmp_peer.scenarios.spec import Scenario
    from nmp_peer.scenarios.truth import check_counters

    a_clip, b_clip, out = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "out"
    write_audio(a_clip, music_like(9.0, seed=1))
    write_audio(b_clip, music_like(9.0, seed=2))
    out.mkdir()
    scenario = Scenario(name="gilbert-5", loss=0.05, loss_model="gilbert", burst=2.0, seed=3)
    t0 = time.monotonic()
    with open_backend("loopback", out, safety_s=90.0) as backend:
        result = run_jam(backend, JamPlan(scenario, "repeat", 4.0, out, a_clip, b_clip, a_extra_s=1.0))
    assert time.monotonic() - t0 < 90
    counters = check_counters(result, read_log(result["relay_log"]))
    failed = [f"{c['check']}: {c['detail']}" for c in counters["checks"] if not c["ok"]]
    assert not failed, failed
    names = {c["check"] for c in counters["checks"]}
    assert {"lost = relay drops", "relay saw all A sent", "A got all the relay sent"} <= names, names
    assert counters["truth"]["lost_high"] >= 5, counters["truth"]
    a, b = result["a"], result["b"]
    assert a["packets_received"] > 150 and b["packets_received"] > 150, (a, b)
    heard, _ = read_audio(result["b_hears"])
    assert np.abs(heard).max() > 0.1
