"""Loss models, trace files, challenge-like traces and network impairments."""

from __future__ import annotations

import numpy as np
import pytest

from nmp_peer.netsim.impair import PACKET_INTERVAL_S, Decision, Impairment, simulate_arrivals
from nmp_peer.netsim.loss import (
    BernoulliLoss,
    GilbertElliottLoss,
    LossModel,
    NoLoss,
    TraceError,
    TraceLoss,
    burst_lengths,
    challenge_burst_pmf,
    challenge_like_trace,
    make_loss_model,
    packet_burst_lengths,
    read_trace,
    write_trace,
)

N_LONG = 200_000


def models(seed: int = 0) -> list[LossModel]:
    return [
        NoLoss(),
        BernoulliLoss(0.1, seed=seed),
        GilbertElliottLoss(0.1, 2.0, seed=seed),
        GilbertElliottLoss(0.5, 1.0, seed=seed),  # p_good_to_bad + p_bad_to_good > 1
        GilbertElliottLoss(0.1, 3.0, seed=seed, loss_in_bad=0.7, loss_in_good=0.01),
        TraceLoss([0, 1, 1, 0, 1, 0, 0, 1], loop=True),
        TraceLoss([1, 1, 0, 1]),
    ]


# --- long-run statistics -------------------------------------------------------------


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
def test_bernoulli_rate_and_burst(p: float) -> None:
    lost = BernoulliLoss(p, seed=1).sample(N_LONG)
    assert lost.mean() == pytest.approx(p, rel=0.1)
    assert burst_lengths(lost).mean() == pytest.approx(1 / (1 - p), rel=0.1)


@pytest.mark.parametrize(
    ("loss_rate", "mean_burst"),
    [(0.1, 2.0), (0.05, 4.0), (0.2, 1.0), (0.3, 1.5), (0.5, 1.0), (0.1, 10.0)],
)
def test_gilbert_rate_and_burst(loss_rate: float, mean_burst: float) -> None:
    lost = GilbertElliottLoss(loss_rate, mean_burst, seed=2).sample(N_LONG)
    assert lost.mean() == pytest.approx(loss_rate, rel=0.1)
    assert burst_lengths(lost).mean() == pytest.approx(mean_burst, rel=0.1)


def test_gilbert_transition_probabilities() -> None:
    m = GilbertElliottLoss(0.1, 2.0)
    assert m.p_bad_to_good == pytest.approx(0.5)
    assert m.p_good_to_bad == pytest.approx(0.1 / (2.0 * 0.9))


def test_gilbert_in_state_loss_rate() -> None:
    m = GilbertElliottLoss(0.2, 3.0, seed=3, loss_in_bad=0.6, loss_in_good=0.02)
    assert m.expected_loss_rate == pytest.approx(0.2 * 0.6 + 0.8 * 0.02)
    assert m.sample(N_LONG).mean() == pytest.approx(m.expected_loss_rate, rel=0.1)


def test_zero_loss_never_loses() -> None:
    assert not GilbertElliottLoss(0.0, 3.0).sample(10_000).any()
    assert not BernoulliLoss(0.0).sample(10_000).any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loss_rate": 0.1, "mean_burst": 0.5}, "mean_burst"),
        ({"loss_rate": 1.0, "mean_burst": 2.0}, "loss_rate"),
        ({"loss_rate": -0.1, "mean_burst": 2.0}, "loss_rate"),
        ({"loss_rate": 0.6, "mean_burst": 1.0}, "impossible"),
        ({"loss_rate": 0.1, "mean_burst": float("nan")}, "mean_burst"),
        ({"loss_rate": 0.1, "mean_burst": float("inf")}, "mean_burst"),
        ({"loss_rate": 0.1, "mean_burst": 2.0, "loss_in_bad": 1.5}, "loss_in_bad"),
        ({"loss_rate": 0.1, "mean_burst": 2.0, "loss_in_good": -0.1}, "loss_in_good"),
    ],
)
def test_gilbert_rejects_impossible_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GilbertElliottLoss(**kwargs)


def test_bernoulli_rejects_bad_probability() -> None:
    with pytest.raises(ValueError, match="probability"):
        BernoulliLoss(1.5)


# --- determinism and streaming ------------------------------------------------------


def test_same_seed_same_stream_other_seed_differs() -> None:
    for a, b, c in zip(models(5), models(5), models(6), strict=False):
        first = a.sample(5000)
        assert np.array_equal(first, b.sample(5000))
        random = isinstance(a, BernoulliLoss) or (isinstance(a, GilbertElliottLoss) and a.p_bad_to_good < 1)
        if random:  # GilbertElliottLoss(0.5, 1.0) just alternates
            assert not np.array_equal(first, c.sample(5000))
        a.reset()
        assert np.array_equal(first, a.sample(5000))


@pytest.mark.parametrize("index", range(len(models())))
def test_next_lost_equals_sample(index: int) -> None:
    model = models(7)[index]
    whole = model.sample(3000)
    model.reset()
    one_by_one = np.array([model.next_lost() for _ in range(3000)])
    assert np.array_equal(whole, one_by_one)
    model.reset()
    mixed = np.concatenate(
        [model.sample(1), model.sample(0), model.sample(999), [model.next_lost()], model.sample(1999)]
    )
    assert np.array_equal(whole, mixed)


def test_negative_count_rejected() -> None:
    with pytest.raises(ValueError):
        BernoulliLoss(0.1).sample(-1)


def test_trace_loss_replays_then_receives() -> None:
    m = TraceLoss([True, False, True])
    assert m.sample(5).tolist() == [True, False, True, False, False]
    m.reset()
    assert [m.next_lost() for _ in range(4)] == [True, False, True, False]
    looped = TraceLoss([1, 0, 0], loop=True)
    assert looped.sample(7).tolist() == [True, False, False, True, False, False, True]


def test_trace_loss_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="0/1"):
        TraceLoss([0, 2, 1])


# --- trace files --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "0\n1\n1\n0\n1\n",
        "0\n1\n1\n0\n1",
        "0\r\n1\r\n1\r\n0\r\n1\r\n\r\n",
        "0\n1\n1\n0\n1\n\n\n  \n",
        " 0 \n1\t\n1\n0\n1\n",
        "01101\n",
        "01101",
        "011\n01\n",
        "\ufeff0\n1\n1\n0\n1\n",
    ],
)
def test_read_trace_good(tmp_path, text: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(text, encoding="utf-8", newline="")
    assert read_trace(path).tolist() == [False, True, True, False, True]


def test_read_trace_bad_digit_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("0\n" * 16 + "2\n" + "0\n" * 3)
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(info.value) == "trace.txt:17: expected 0 or 1, got '2'"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0\n1\n\n1\n", "trace.txt:3: blank line inside the trace"),
        ("", "trace.txt:1: empty trace"),
        ("\n\n", "trace.txt:1: empty trace"),
        ("0\n1.0\n", "trace.txt:2: expected 0 or 1, got '1.0'"),
        ("0 1\n", "trace.txt:1: expected 0 or 1, got '0 1'"),
        ("0\n-1\n", "trace.txt:2: expected 0 or 1, got '-1'"),
        ("0\nlost\n", "trace.txt:2: expected 0 or 1, got 'lost'"),
        ("0100120\n", "trace.txt:1: expected 0 or 1, got '0100120' (character 6)"),
        ("0,1,0\n", "trace.txt:1: expected 0 or 1, got '0,1,0' (character 2)"),
    ],
)
def test_read_trace_errors(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "trace.txt"
    path.write_text(text)
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_read_trace_long_bad_line_is_shortened(tmp_path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("0" * 100 + "x" + "\n")
    with pytest.raises(TraceError, match=r"trace.txt:1: expected 0 or 1, got '0{20}\.\.\.' \(character 101\)"):
        read_trace(path)


def test_read_trace_undecodable_bytes(tmp_path) -> None:
    path = tmp_path / "trace.txt"
    path.write_bytes(b"0\n\xff\n")
    with pytest.raises(TraceError, match="trace.txt:2: expected 0 or 1"):
        read_trace(path)


def test_write_read_round_trip(tmp_path) -> None:
    lost = challenge_like_trace(2000, seed=4)
    path = tmp_path / "out.txt"
    write_trace(path, lost)
    lines = path.read_text().splitlines()
    assert len(lines) == 2000 and set(lines) == {"0", "1"}
    assert np.array_equal(read_trace(path), lost)
    assert np.array_equal(TraceLoss.from_file(path).sample(2000), lost)


def test_write_trace_rejects_non_binary(tmp_path) -> None:
    with pytest.raises(ValueError):
        write_trace(tmp_path / "t.txt", [0, 3])


# --- factory --------------------------------------------------------------------------


def test_make_loss_model(tmp_path) -> None:
    path = tmp_path / "t.txt"
    write_trace(path, [1, 0, 1])
    assert isinstance(make_loss_model("none"), NoLoss)
    assert isinstance(make_loss_model("bernoulli", loss=0.1, seed=3), BernoulliLoss)
    gilbert = make_loss_model("gilbert", loss=0.1, burst=3.0, seed=3)
    assert isinstance(gilbert, GilbertElliottLoss)
    assert np.array_equal(gilbert.sample(1000), GilbertElliottLoss(0.1, 3.0, seed=3).sample(1000))
    assert make_loss_model("trace", trace=path).sample(4).tolist() == [True, False, True, False]
    with pytest.raises(ValueError, match="trace file"):
        make_loss_model("trace")
    with pytest.raises(ValueError, match="choose one of"):
        make_loss_model("markov")


# --- challenge-like traces ------------------------------------------------------------


def test_challenge_like_trace_distribution() -> None:
    lost = challenge_like_trace(N_LONG, seed=8)
    assert lost.mean() == pytest.approx(0.10, rel=0.1)
    bursts = burst_lengths(lost)
    assert bursts.min() >= 1 and bursts.max() <= 16
    pmf = challenge_burst_pmf()
    freq = np.bincount(bursts, minlength=pmf.size) / bursts.size
    assert np.allclose(freq[1:7], pmf[1:7], atol=0.015)
    assert freq[7:].sum() == pytest.approx(pmf[7:].sum(), abs=0.01)
    assert freq[1:7].sum() > 0.9  # mostly short bursts
    assert not lost[0]


def test_challenge_like_trace_very_long_bursts_at_the_requested_share() -> None:
    lost = challenge_like_trace(N_LONG, seed=8, very_long_prob=0.03)
    assert lost.mean() == pytest.approx(0.10, rel=0.1)  # the loss rate holds with the longer bursts
    bursts = burst_lengths(lost)[:-1]  # the last one may be cut by the trace's end
    very_long = (bursts >= 17) & (bursts <= 50)
    assert very_long.mean() == pytest.approx(0.03, abs=0.008)  # ~6,000 bursts: sd of the share ~0.002
    assert bursts.max() <= 50
    assert ((bursts >= 7) & (bursts <= 16)).mean() == pytest.approx(0.05, abs=0.01)
    pmf = challenge_burst_pmf(very_long_prob=0.03)
    assert pmf.sum() == pytest.approx(1.0) and pmf.size == 51 and pmf[17:].sum() == pytest.approx(0.03)


def test_challenge_like_trace_without_very_long_bursts_is_unchanged() -> None:
    assert challenge_burst_pmf().size == 17
    assert np.array_equal(
        challenge_like_trace(20_000, seed=5), challenge_like_trace(20_000, seed=5, very_long_prob=0.0)
    )
    with pytest.raises(ValueError, match="very_long_prob"):
        challenge_burst_pmf(long_burst_prob=0.5, very_long_prob=0.6)


def test_packet_burst_lengths() -> None:
    mask = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    assert packet_burst_lengths(mask).tolist() == [0, 2, 2, 0, 1, 0, 0, 7, 7, 7, 7, 7, 7, 7]
    assert packet_burst_lengths([]).tolist() == []
    assert packet_burst_lengths([1]).tolist() == [1]


def test_challenge_burst_pmf_sums_to_one() -> None:
    pmf = challenge_burst_pmf()
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf[0] == 0 and np.all(np.diff(pmf[1:7]) < 0)


def test_challenge_like_trace_deterministic() -> None:
    assert np.array_equal(challenge_like_trace(5000, seed=1), challenge_like_trace(5000, seed=1))
    assert not np.array_equal(challenge_like_trace(5000, seed=1), challenge_like_trace(5000, seed=2))
    assert challenge_like_trace(0, seed=1).size == 0
    assert challenge_like_trace(777, seed=1).size == 777


def test_burst_lengths() -> None:
    assert burst_lengths([1, 1, 0, 1, 0, 0, 1, 1, 1]).tolist() == [2, 1, 3]
    assert burst_lengths([0, 0]).tolist() == []


# --- impairments -----------------------------------------------------------------------


def decisions(imp: Impairment, n: int) -> list[Decision]:
    return [imp.next_decision() for _ in range(n)]


@pytest.mark.parametrize("dist", ["normal", "pareto"])
def test_impairment_delays_never_below_base(dist: str) -> None:
    imp = Impairment(
        BernoulliLoss(0.05, seed=1), delay_ms=20, jitter_ms=8, jitter_dist=dist, reorder=0.05, duplicate=0.05, seed=2
    )
    delays = np.array([d for _ in range(20_000) for d in imp.decide()])
    assert delays.min() >= 0.020
    no_base = Impairment(jitter_ms=8, jitter_dist=dist, seed=3)
    assert min(d for _ in range(5000) for d in no_base.decide()) >= 0.0


def test_jitter_distributions() -> None:
    normal = Impairment(jitter_ms=10, jitter_dist="normal", seed=4)
    j = np.array([normal.decide()[0] for _ in range(20_000)]) * 1000
    assert j.mean() == pytest.approx(10 * np.sqrt(2 / np.pi), rel=0.05)
    pareto = Impairment(jitter_ms=10, jitter_dist="pareto", seed=4)
    j = np.array([pareto.decide()[0] for _ in range(20_000)]) * 1000
    assert np.median(j) == pytest.approx(10 * (2 ** (1 / 3) - 1), rel=0.05)
    assert np.quantile(j, 0.999) > 50  # heavy tail: (1000 ** (1/3) - 1) * 10 = 90 ms


def test_impairment_rates() -> None:
    imp = Impairment(BernoulliLoss(0.1, seed=5), jitter_ms=2, reorder=0.05, duplicate=0.08, seed=6)
    actions = np.array([d.action for d in decisions(imp, 50_000)])
    kept = actions != "drop"
    assert (~kept).mean() == pytest.approx(0.1, rel=0.1)
    assert (actions[kept] == "reorder").mean() == pytest.approx(0.05, rel=0.1)
    assert (actions[kept] == "duplicate").mean() == pytest.approx(0.08, rel=0.1)


def test_decision_records_match_delays() -> None:
    imp = Impairment(BernoulliLoss(0.2, seed=1), delay_ms=5, jitter_ms=3, reorder=0.1, duplicate=0.1, seed=7)
    for i, d in enumerate(decisions(imp, 2000)):
        assert d.index == i
        assert len(d.delays_s) == {"drop": 0, "deliver": 1, "reorder": 1, "duplicate": 2}[d.action]


def test_reorder_arrives_after_successor() -> None:
    imp = Impairment(delay_ms=10, reorder=0.1, seed=8)
    ds = decisions(imp, 5000)
    arrival = {d.index: d.index * PACKET_INTERVAL_S + d.delays_s[0] for d in ds}
    reordered = [d.index for d in ds[:-1] if d.action == "reorder" and ds[d.index + 1].action == "deliver"]
    assert len(reordered) > 300
    assert all(arrival[i] > arrival[i + 1] for i in reordered)
    assert all(arrival[i] < arrival[i + 3] for i in reordered if i + 3 < 5000)  # held 1-2 intervals

    imp.reset()
    order = [i for i, _ in simulate_arrivals(5000, imp)]
    inversions = sum(a > b for a, b in zip(order, order[1:], strict=False))
    assert inversions >= len(reordered)


def test_no_reorder_no_jitter_keeps_order() -> None:
    imp = Impairment(BernoulliLoss(0.1, seed=1), delay_ms=30, duplicate=0.1, seed=9)
    arrivals = simulate_arrivals(3000, imp)
    order = [i for i, _ in arrivals]
    assert order == sorted(order)
    times = [t for _, t in arrivals]
    assert times == sorted(times)
    assert len(arrivals) == pytest.approx(3000 * 0.9 * 1.1, rel=0.05)


def test_simulate_arrivals_sorted_and_complete() -> None:
    imp = Impairment(
        GilbertElliottLoss(0.1, 2.0, seed=3),
        delay_ms=15,
        jitter_ms=10,
        jitter_dist="pareto",
        reorder=0.05,
        duplicate=0.05,
        seed=10,
    )
    arrivals = simulate_arrivals(4000, imp)
    times = [t for _, t in arrivals]
    assert times == sorted(times)
    imp.reset()
    expected = sum(len(imp.decide()) for _ in range(4000))
    assert len(arrivals) == expected
    assert all(t >= i * PACKET_INTERVAL_S + 0.015 for i, t in arrivals)


def test_impairment_deterministic() -> None:
    def run(seed: int) -> list[Decision]:
        return decisions(
            Impairment(
                GilbertElliottLoss(0.1, 2.0, seed=1), delay_ms=5, jitter_ms=4, reorder=0.05, duplicate=0.05, seed=seed
            ),
            3000,
        )

    assert run(11) == run(11)
    assert run(11) != run(12)
    imp = Impairment(BernoulliLoss(0.1, seed=2), jitter_ms=4, reorder=0.1, seed=13)
    first = decisions(imp, 500)
    imp.reset()
    assert [imp.decide() for _ in range(500)] == [list(d.delays_s) for d in first]


def test_common_random_numbers_across_settings() -> None:
    """Changing the duplicate rate leaves the loss and the first copy's delay alone."""
    a = decisions(Impairment(BernoulliLoss(0.1, seed=1), jitter_ms=5, seed=14), 2000)
    b = decisions(Impairment(BernoulliLoss(0.1, seed=1), jitter_ms=5, duplicate=0.3, seed=14), 2000)
    assert [d.action == "drop" for d in a] == [d.action == "drop" for d in b]
    assert [d.delays_s[:1] for d in a] == [d.delays_s[:1] for d in b]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay_ms": -1},
        {"jitter_ms": -1},
        {"jitter_dist": "uniform"},
        {"reorder": 1.5},
        {"duplicate": -0.1},
        {"reorder": 0.6, "duplicate": 0.6},
    ],
)
def test_impairment_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)
