"""Named network scenarios: the file, the analysis, and real jams through the relay.

The jams run on the loopback backend (three processes on 127.0.0.1) and, as root, on
the netns backend (three network namespaces): clean, 5 % loss, a 2 s outage, a peer
restart and a rate limit below the stream's bitrate, 3-4 s of playing each. Every
party is stopped with SIGTERM and must exit 0 with its JSON summary.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmp_peer import BLOCK_FRAMES, SAMPLE_RATE
from nmp_peer.netsim.relaylog import read_log
from nmp_peer.scenarios import Scenario, ScenarioError, load_scenarios, select
from nmp_peer.scenarios.alignment import track_alignment
from nmp_peer.scenarios.analysis import quality
from nmp_peer.scenarios.clicks import CLICK_RATIO
from nmp_peer.scenarios.runner import RECOVERY_LIMIT_BLOCKS
from nmp_peer.scenarios.spec import STREAM_KBPS, synthetic_music
from nmp_peer.scenarios.truth import receiver_truth

ALL = {
    "clean",
    "bernoulli-2",
    "bernoulli-5",
    "bernoulli-10",
    "bernoulli-20",
    "gilbert-b2",
    "gilbert-b6",
    "challenge-5",
    "challenge-10",
    "jitter-2-normal",
    "jitter-5-normal",
    "jitter-15-normal",
    "jitter-2-pareto",
    "jitter-5-pareto",
    "jitter-15-pareto",
    "reorder-1",
    "duplicate-1",
    "rate-600k",
    "outage-2s",
    "restart",
}


# ---------------------------------------------------------------------- the scenario file
def test_the_shipped_file_has_the_named_set() -> None:
    scenarios = {s.name: s for s in load_scenarios()}
    assert set(scenarios) == ALL
    assert scenarios["rate-600k"].rate_kbps < STREAM_KBPS
    assert scenarios["outage-2s"].outage == (1.0, 2.0)
    assert scenarios["restart"].restart_at_s and not scenarios["restart"].impaired
    assert {s.jitter_dist for s in scenarios.values() if s.jitter_ms} == {"normal", "pareto"}
    assert not scenarios["clean"].impaired


def test_relay_and_netem_arguments() -> None:
    sc = Scenario(
        name="x",
        loss=0.1,
        loss_model="gilbert",
        burst=4,
        delay_ms=30,
        jitter_ms=5,
        jitter_dist="pareto",
        rate_kbps=600,
        outage=(1, 2),
        seed=7,
    )
    args = sc.relay_args()
    assert args[args.index("--loss-model") + 1] == "gilbert" and args[args.index("--outage") + 1] == "1:2"
    assert args[args.index("--rate-kbps") + 1] == "600" and args[args.index("--seed") + 1] == "7"
    assert sc.netem_args() is None  # an outage has no netem form
    g = Scenario(name="g", loss=0.1, loss_model="gilbert", burst=4, delay_ms=30, jitter_ms=5, jitter_dist="pareto")
    assert g.netem_args() == "delay 30ms 5ms distribution pareto loss gemodel 2.778% 25% 100% 0%"
    assert Scenario(name="b", loss=0.05).netem_args() == "loss random 5%"
    assert Scenario(name="c").netem_args() == "delay 0ms"
    trace = Scenario(name="t", loss_model="trace", trace_loss=0.1, trace_seed=3)
    with pytest.raises(ScenarioError, match="trace file"):
        trace.relay_args()
    assert trace.relay_args("/tmp/t.txt")[-2:] == ["--trace", "/tmp/t.txt"]
    lost = trace.trace_packets(60.0)
    assert 0.05 < lost.mean() < 0.15 and len(lost) >= 60 * SAMPLE_RATE // BLOCK_FRAMES


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('[[scenario]]\nname = "a"\nlos = 0.1\n', "scenario a: los: unknown key"),
        ('[[scenario]]\nname = "a"\nloss = 2\n', "scenario a: loss:"),
        ('[[scenario]]\nname = "a"\nloss_model = "trace"\n', "needs trace_loss"),
        ('[[scenario]]\nname = "a"\n[[scenario]]\nname = "a"\n', "repeated: a"),
        ('[[scenario]]\nname = "a"\noutage = [1, -2]\n', "outage"),
        ('[[scenario]]\nname = "a"\nloss = 0.9\nloss_model = "gilbert"\nburst = 1\n', "impossible"),
        ("[[scenario]\n", "not valid TOML"),
    ],
)
def test_a_bad_scenario_file_is_refused_in_one_line(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=None) as info:
        load_scenarios(path)
    msg = str(info.value)
    assert "\n" not in msg and fragment in msg and str(path) in msg, msg


def test_defaults_apply_and_selection_keeps_the_order(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[defaults]\nseed = 9\nconfig = "wan"\n[[scenario]]\nname = "a"\n[[scenario]]\nname = "b"\nseed = 2\n'
    )
    a, b = load_scenarios(path)
    assert (a.seed, a.config, b.seed) == (9, "wan", 2)
    assert [s.name for s in select([a, b], "b,a")] == ["b", "a"]
    with pytest.raises(ScenarioError, match="unknown scenario nope"):
        select([a, b], "a,nope")


def test_cli_lists_scenarios_and_refuses_unknown_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from nmp_peer.cli import main

    assert main(["scenarios", "list"]) == 0
    assert "outage-2s" in capsys.readouterr().out
    assert main(["scenarios", "run", "--out", str(tmp_path), "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nmp-peer: error: unknown scenario nope"), err
    assert main(["scenarios", "run", "--out", str(tmp_path), "--only", "clean", "--concealers", "magic"]) == 2
    assert "unknown concealer" in capsys.readouterr().err


# ---------------------------------------------------------------------- ground truth from a relay log
def _records(
    direction: str, stream: int, seqs: range, t0: float, actions: dict[int, str] | None = None
) -> list[dict[str, Any]]:
    actions = actions or {}
    out = []
    for i, seq in enumerate(seqs):
        action = actions.get(seq, "deliver")
        delays = [] if action in ("drop", "outage", "rate-drop") else ([0.0, 0.5] if action == "duplicate" else [0.0])
        out.append(
            {
                "t_ms": t0 + i * 11.61,
                "dir": direction,
                "index": i,
                "seq": seq % 2**32,
                "stream_id": stream,
                "bytes": 1048,
                "action": action,
                "delays_ms": delays,
            }
        )
    return out


def test_receiver_truth_counts_drops_duplicates_and_a_restarted_stream() -> None:
    old = _records(
        "a2b", 7, range(2**32 - 10, 2**32 + 90), 0.0, {2**32 - 5: "drop", 2**32 + 3: "outage", 2**32 + 4: "duplicate"}
    )
    new = _records("a2b", 9, range(500, 700), 100 * 11.61 + 1000.0, {510: "drop", 690: "drop"})
    for i, r in enumerate(new):
        r["index"] = 100 + i
    heard = _records("b2a", 3, range(0, 260), 0.0)  # B's own packets: it stopped before seq 680 of the new stream
    truth = receiver_truth(old + new + heard, "a2b", lag_packets=4)
    assert [s["stream_id"] for s in truth["streams"]] == [7, 9]
    assert truth["foreign"] == 0  # the new stream came 1 s after the old one's last packet: re-pinned at once
    # A receiver that re-pins only after 1.5 s of silence counts the first 0.5 s of it foreign
    # a keyed one follows the new session from its first packet.
    slower = receiver_truth(old + new + heard, "a2b", lag_packets=4, repin_after_ms=1500.0)
    assert slower["foreign"] == 42 and slower["streams"][1]["start_seq"] == 543  # 43 slots, one dropped
    assert receiver_truth(old + new + heard, "a2b", lag_packets=4, repin_after_ms=None)["foreign"] == 0
    assert truth["duplicate_low"] == truth["duplicate_high"] == 1
    silence = (new[0]["t_ms"] - old[-1]["t_ms"]) / 11.61
    assert truth["gap_slots_low"] <= silence <= truth["gap_slots_high"] <= silence + 2
    # two in the old stream, one early in the new; the sender's silence is no loss, and
    # 690 lies beyond where B stopped
    assert truth["lost_low"] == truth["lost_high"] == 3


# ---------------------------------------------------------------------- alignment and quality
def _played(clip: np.ndarray, schedule: list[int | None], lead_blocks: int = 5, offset: int = 8) -> np.ndarray:
    """An output that plays clip packets in ``schedule`` order (None: a concealed block of noise)."""
    rng = np.random.default_rng(0)
    parts = [np.zeros(lead_blocks * BLOCK_FRAMES + offset)]
    for k in schedule:
        parts.append(
            0.05 * rng.standard_normal(BLOCK_FRAMES) if k is None else clip[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES]
        )
    out = np.concatenate(parts)
    return out[: len(out) // BLOCK_FRAMES * BLOCK_FRAMES]


def test_alignment_follows_losses_and_inserts_and_catches_a_packet_played_twice() -> None:
    clip = synthetic_music(4.0, seed=1)[:, 0].astype(np.float64)
    n = len(clip) // BLOCK_FRAMES
    lost = {20, 21, 60, 200}
    schedule = [None if k in lost else k for k in range(n)]
    schedule.insert(100, None)  # an inserted block: the rest comes one block later
    track = track_alignment(_played(clip, schedule), clip)
    assert track.order_violations == [] and track.segments == 1
    assert track.clean.sum() >= n - 4 * len(lost) - 4
    twice = list(range(n))
    twice[150:150] = [149]  # packet 149 played again
    track = track_alignment(_played(clip, twice), clip)
    assert len(track.order_violations) == 1 and -BLOCK_FRAMES - 8 <= track.order_violations[0][1] <= 0
    swapped = list(range(n))
    swapped[150:160] = list(range(170, 180))
    swapped[170:180] = list(range(150, 160))
    assert track_alignment(_played(clip, swapped), clip).order_violations


def test_a_held_prediction_that_resembles_earlier_audio_is_concealment_not_a_replay() -> None:
    """A long burst's held prediction of repeated music can match the clip elsewhere for
    several blocks (at a correlation of 0.99, not the 1.0 of received packets): neither an
    order violation nor clean audio, and the stream is found again where it was."""
    clip = synthetic_music(4.0, seed=4)[:, 0].astype(np.float64)
    rng = np.random.default_rng(1)
    n = 150
    out = _played(clip, list(range(100)))
    held = clip[40 * BLOCK_FRAMES : 52 * BLOCK_FRAMES]  # what came 60 blocks before, 12 % off: a correlation of 0.993
    held = held + 0.12 * float(np.std(held)) * rng.standard_normal(len(held))
    out = np.concatenate([out, held, np.zeros(38 * BLOCK_FRAMES), _played(clip, list(range(150, n + 100)), 0, 0)])
    track = track_alignment(out, clip)
    assert track.order_violations == [] and track.segments == 1
    lead = 5 + 1  # _played's lead blocks, and its 8-sample offset
    assert not track.clean[lead + 100 : lead + 112].any()  # the look-alike is not clean
    assert track.clean[lead + 150 + 2 : lead + 160].all()  # the stream, found where it was
    replayed = np.concatenate([_played(clip, list(range(100))), clip[40 * BLOCK_FRAMES : 52 * BLOCK_FRAMES]])
    assert track_alignment(replayed, clip).order_violations  # the same blocks exact: played twice


def test_a_restarted_sender_is_a_new_segment_and_its_recovery_is_measured() -> None:
    clip = synthetic_music(4.0, seed=2)[:, 0].astype(np.float64)
    first = list(range(120)) + [None] * 3  # the old stream, then concealment fading out
    out = np.concatenate(
        [_played(clip, first), np.zeros(80 * BLOCK_FRAMES), _played(clip, list(range(150)), lead_blocks=0)]
    )
    truth = {
        "streams": [
            {"first_t_ms": 0.0, "last_t_ms": 119 * 11.61, "lost_positions": [], "played_upto": 119},
            {"first_t_ms": (119 + 81) * 11.61, "last_t_ms": 0.0, "lost_positions": [], "played_upto": 149},
        ]
    }
    q = quality(out, clip, truth, restarted=True)
    assert q["segments"] == 2 and q["order_violations"] == 0
    assert 0 <= q["restart_recovery_blocks"] <= 5
    assert min(q["after_restart_ncc"][1:]) > 0.99
    assert track_alignment(out, clip).order_violations  # without the restart, the step back is a violation


def test_lost_packets_are_matched_to_the_relay_log_and_scored() -> None:
    clip = synthetic_music(4.0, seed=3)[:, 0].astype(np.float64)
    n = len(clip) // BLOCK_FRAMES
    lost = [30, 31, 90, 250]
    schedule = [None if k in lost else k for k in range(n)]
    out = _played(clip, schedule)
    # The stream began with 7 packets of silence before the clip: positions are clip blocks + 7.
    truth = {
        "streams": [
            {"first_t_ms": 0.0, "last_t_ms": 0.0, "lost_positions": [k + 7 for k in lost], "played_upto": n + 7}
        ]
    }
    q = quality(out, clip, truth)
    assert q["agreement"]["matched"] == q["agreement"]["relay_lost_in_view"] == len(lost)
    assert q["lost_packets"] == len(lost)
    assert q["lost_snr_db"] < 3.0 and q["snr_db"] > 10.0  # noise in the gaps, the rest exact
    assert q["order_violations"] == 0


# ---------------------------------------------------------------------- real jams
def _jams(
    backend: str, names: list[str], concealer: str, seconds: float, out: Path, keyed: bool = False
) -> dict[str, dict[str, Any]]:
    from nmp_peer.scenarios.runner import run_scenarios

    scenarios = select(load_scenarios(), names)
    key = None
    if keyed:
        out.mkdir(parents=True, exist_ok=True)
        key = out / "jam.key"
        key.write_text(os.urandom(32).hex())
    t0 = time.monotonic()
    entries = run_scenarios(
        scenarios, out, backend=backend, concealers=[concealer], seconds=seconds, clip="synthetic", key_file=key
    )
    assert time.monotonic() - t0 < 40 * len(names)
    errors = [e["error"] for e in entries if e.get("error")]
    assert not errors, errors
    return {e["scenario"]: e for e in entries}


@pytest.fixture(scope="module")
def loopback_jams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("loopback")
    return _jams("loopback", ["clean", "bernoulli-5", "outage-2s", "restart", "rate-600k"], "lpc", 3.5, out)


@pytest.fixture(scope="module")
def keyed_jams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Keyed peers (a handshake per session, AEAD): loopback, and netns where it runs."""
    from nmp_peer.scenarios.backends.netns import netns_unavailable

    out = tmp_path_factory.mktemp("keyed")
    jams = {
        f"loopback/{k}": v
        for k, v in _jams("loopback", ["bernoulli-5", "duplicate-1", "restart"], "lpc", 3.5, out / "lo", True).items()
    }
    if netns_unavailable() is None:
        jams.update({f"netns/{k}": v for k, v in _jams("netns", ["restart"], "repeat", 3.0, out / "ns", True).items()})
    return jams


@pytest.fixture(scope="module")
def netns_jams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    from nmp_peer.scenarios.backends.netns import netns_unavailable

    reason = netns_unavailable()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    out = tmp_path_factory.mktemp("netns")
    return _jams("netns", ["bernoulli-5", "restart"], "repeat", 3.0, out)


def _failed(entry: dict[str, Any]) -> list[str]:
    a = entry["analysis"]
    return [f"{c['check']}: {c['detail']}" for c in [*a["counters"]["checks"], *a["audio_checks"]] if not c["ok"]]


def _check_jam(entry: dict[str, Any]) -> None:
    """Assert everything a jam must show."""
    result, analysis = entry["result"], entry["analysis"]
    assert analysis["ok"], _failed(entry)
    assert set(result["exit_codes"].values()) == {0}  # SIGTERM: every party ended cleanly with its summary
    b = result["b"]
    assert b["blocks_played"] > 200 and b["packets_received"] > 100, b
    q = analysis["quality"]
    assert q["order_violations"] == 0, q
    assert q["clicks"] == 0 and q["click_ratio"] <= CLICK_RATIO, q


@pytest.mark.slow
def test_a_jam_with_the_gan_concealer_conceals_every_relay_loss(tmp_path: Path) -> None:
    """Two real jam processes and the relay, Gilbert loss, the shipped GAN model, real time."""
    entry = _jams("loopback", ["gilbert-b2"], "gan", 3.5, tmp_path)["gilbert-b2"]
    _check_jam(entry)
    b = entry["result"]["b"]
    assert b["packets_concealed"] >= 5, b
    # The worker's blocks played: the LPC stage at least was ready at most deadlines (a miss
    # plays repetition, and a loaded machine can make a few; it is at least a block ahead of
    # each, and its LPC stage takes ~1 ms of the ~12 there are).
    assert b["concealer_misses"] < b["packets_concealed"] / 2, b
    assert b["concealer_partial"] < b["packets_concealed"], b


@pytest.mark.slow
@pytest.mark.parametrize("name", ["clean", "bernoulli-5", "outage-2s", "restart", "rate-600k"])
def test_loopback_jam_counters_match_the_relay_and_the_audio_is_in_order(
    loopback_jams: dict[str, Any], name: str
) -> None:
    _check_jam(loopback_jams[name])


@pytest.mark.slow
def test_loopback_clean_is_bit_exact_and_lossy_packets_are_the_relays(loopback_jams: dict[str, Any]) -> None:
    clean = loopback_jams["clean"]
    b, q = clean["result"]["b"], clean["analysis"]["quality"]
    assert b["packets_lost"] == 0 and clean["result"]["relay"]["a2b"]["lost"] == 0
    # Bit exact (None: inf), unless B's own counters say the machine made it late: a late
    # packet is concealed, and the buffer then grows (an inserted block) and the drift
    # correction resamples for a while. Then the clip must still be there, clean and in order.
    hiccups = b["packets_late"] + b["blocks_inserted"] + b["blocks_dropped"] + b["underruns"]
    if hiccups == 0:
        assert q["snr_db"] is None or q["snr_db"] > 60, (q, b)
    else:
        assert q["snr_db"] is None or q["snr_db"] > 20, (q, b)
        assert q["clean_blocks"] >= 0.9 * q["sounding_blocks"] and q["order_violations"] == 0, (q, b)
    lossy = loopback_jams["bernoulli-5"]["analysis"]
    truth, q = lossy["counters"]["truth"], lossy["quality"]
    b = loopback_jams["bernoulli-5"]["result"]["b"]
    assert truth["lost_low"] <= b["packets_lost"] <= truth["lost_high"]
    # The audio shows which blocks were concealed by their not being bit-exact; where the
    # machine made B's drift reader resample (interpolated blocks are not exact either),
    # the audio cannot single them out, and the counters above are the check.
    if b["blocks_resampled"] == 0:
        assert q["agreement"]["matched"] == q["agreement"]["relay_lost_in_view"] > 5, q["agreement"]
    else:
        assert q["agreement"]["relay_lost_in_view"] > 5, q["agreement"]
    assert np.isfinite(q["lost_snr_db"]) and np.isfinite(q["lost_lsd_db"])


@pytest.mark.slow
def test_loopback_audio_resumes_within_a_few_packets_after_an_outage_and_a_restart(
    loopback_jams: dict[str, Any],
) -> None:
    outage = loopback_jams["outage-2s"]
    relay = outage["result"]["relay"]
    assert relay["a2b"]["outage_dropped"] > 150 and relay["b2a"]["outage_dropped"] > 150
    q = outage["analysis"]["quality"]
    assert q["outage_recovery_blocks"] <= 3, q
    assert min(q["after_outage_ncc"][4:]) > 0.95, q  # the blocks after the gap match the clip
    restart = loopback_jams["restart"]
    b = restart["result"]["b"]
    assert b["resyncs"] == 1 and b["repins"] == 1 and b["packets_foreign"] == 0, b  # followed at its first packet
    q = restart["analysis"]["quality"]
    assert q["segments"] == 2 and q["restart_recovery_blocks"] <= RECOVERY_LIMIT_BLOCKS, q
    assert min(q["after_restart_ncc"][1:]) > 0.95, q


@pytest.mark.slow
def test_loopback_rate_limit_loss_is_reported(loopback_jams: dict[str, Any]) -> None:
    entry = loopback_jams["rate-600k"]
    relay, b = entry["result"]["relay"], entry["result"]["b"]
    assert relay["a2b"]["rate_dropped"] > 0.1 * relay["a2b"]["received"], relay["a2b"]
    assert b["packets_lost"] > 0.08 * b["blocks_played"], b
    truth = entry["analysis"]["counters"]["truth"]
    assert truth["lost_low"] <= b["packets_lost"] <= truth["lost_high"]


@pytest.mark.slow
def test_loopback_report_plots_and_json(loopback_jams: dict[str, Any]) -> None:
    out = Path(loopback_jams["clean"]["result"]["b_hears"]).parents[2]
    report = (out / "report.md").read_text()
    for name in ("clean", "bernoulli-5", "outage-2s", "restart", "rate-600k"):
        assert f"| {name} | lpc |" in report
    # The report lists the checks that failed: none.
    failed = [
        (name, f)
        for name in ("clean", "bernoulli-5", "outage-2s", "restart", "rate-600k")
        for f in _failed(loopback_jams[name])
    ]
    listed = report.split("## Failed checks\n\n")[1].split("\n\n")[0].splitlines()
    assert not failed and listed == ["None."], (listed, failed)
    for png in ("loss.png", "agreement.png", "quality.png", "latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "results.json").read_text())
    assert len(data["runs"]) == 5 and data["meta"]["backend"] == "loopback"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["loopback/bernoulli-5", "loopback/duplicate-1", "loopback/restart", "netns/restart"])
def test_keyed_jams_count_what_the_relay_logged_and_a_restart_opens_a_new_session(
    keyed_jams: dict[str, Any], name: str
) -> None:
    if name not in keyed_jams:
        from nmp_peer.scenarios.backends.netns import netns_unavailable

        pytest.skip(f"network namespaces unavailable: {netns_unavailable()}")
    entry = keyed_jams[name]
    _check_jam(entry)
    result = entry["result"]
    a, b = result["a"], result["b"]
    assert a["encrypted"] and b["handshakes"] >= 1 and result["relay"]["a2b"]["handshakes"] >= 1
    restarted = name.endswith("restart")
    assert b["sessions"] == (2 if restarted else 1), b  # A's sessions: its first, and after its restart
    assert b["packets_unauthenticated"] == 0 and b["packets_foreign"] == 0, b
    if name.endswith("duplicate-1"):
        # every duplicated audio packet is a replay; a duplicated probe (PING, seq -1) is answered
        log = read_log(result["relay_log"])
        audio_duplicates = sum(r["dir"] == "a2b" and r["action"] == "duplicate" and r["seq"] >= 0 for r in log)
        assert b["packets_replayed"] == audio_duplicates > 0, (b, audio_duplicates)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bernoulli-5", "restart"])
def test_netns_jam_counters_match_the_relay_and_the_audio_is_in_order(netns_jams: dict[str, Any], name: str) -> None:
    from nmp_peer.scenarios.backends.netns import list_namespaces

    entry = netns_jams[name]
    _check_jam(entry)
    assert entry["result"]["relay"]["forward"].startswith("198.18.")
    assert not set(entry["result"]["namespaces"]) & set(list_namespaces())
