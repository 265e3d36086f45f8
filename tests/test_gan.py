"""GanConcealer (LPC + bin2bin-v2 in onnxruntime) with the shipped model: contract, causality,
robustness, and the numpy spectral front end it shares with training."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import music_like

from nmp_peer import BLOCK_FRAMES
from nmp_peer.conceal.gan import (
    CHUNK_CONTEXT_SAMPLES,
    CHUNK_SAMPLES,
    GAP_FRAME,
    N_BINS,
    N_FRAMES,
    GanConcealer,
    ModelNotFoundError,
    SpectralFrontEnd,
    default_model_path,
)
from nmp_peer.conceal.lpc import LpcConcealer
from nmp_peer.lab.simulate import conceal_trace
from nmp_peer.proto.codec import Pcm16Codec
from nmp_peer.proto.packetizer import Packetizer
from nmp_peer.receiver.latency import LatencyPolicy
from nmp_peer.receiver.playout import PlayoutConfig, PlayoutEngine

CTX = 3584
PRED = 1024


@pytest.fixture(scope="module")
def gan() -> GanConcealer:
    return GanConcealer()


def _history(seconds: float = 0.5, seed: int = 0, channels: int = 1) -> np.ndarray:
    return np.ascontiguousarray(music_like(seconds, channels=channels, seed=seed)[-CTX:])


def test_the_model_ships_with_the_package():
    path = default_model_path()
    assert path.is_file() and path.name == "bin2bin_v2.onnx"
    assert path.stat().st_size < 5_000_000


def test_missing_model_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="nmp_peer.train"):
        GanConcealer(model_path=tmp_path / "absent.onnx")


@pytest.mark.parametrize("channels", [1, 2])
def test_shape_dtype_and_contract(gan, channels):
    history = _history(channels=channels)
    out = gan.conceal(history, 0)
    assert out.shape == (PRED, channels) and out.dtype == np.float32
    assert gan.context_samples == CTX and gan.predict_samples == PRED
    assert gan.name == "gan"
    assert np.all(np.isfinite(out)) and np.max(np.abs(out)) <= 1.0


def test_stages_yield_the_lpc_prediction_first_then_the_refined_one(gan):
    history = _history(seed=3)
    stages = list(gan.stages(history, 0))
    assert len(stages) == 2
    np.testing.assert_array_equal(stages[0], LpcConcealer().conceal(history, 0))
    np.testing.assert_array_equal(stages[1], gan.conceal(history, 0))
    assert not np.array_equal(stages[0], stages[1])  # the network changes something


def test_refined_packet_starts_exactly_as_lpc(gan):
    """The first samples are LP's (the crossfade starts there), so the seam is the LPC's."""
    history = _history(seed=4)
    lp, refined = list(gan.stages(history, 0))
    assert abs(float(refined[0, 0] - lp[0, 0])) < 1e-2 * max(1e-3, float(np.max(np.abs(lp))))


def test_same_history_same_output_and_no_state(gan):
    history = _history(seed=5)
    kept = history.copy()
    reference = gan.conceal(history, 0)
    np.testing.assert_array_equal(history, kept)
    gan.conceal((0.5 * np.random.default_rng(1).standard_normal((CTX, 1))).astype(np.float32), 2)
    np.testing.assert_array_equal(gan.conceal(history, 0), reference)
    np.testing.assert_array_equal(gan.conceal(history, 1), reference)  # burst index is not an input


def test_causal_through_the_playout_engine(gan):
    """Changing the audio after a lost packet changes nothing played up to its end."""
    audio = music_like(1.0, seed=6)
    lost = np.zeros(len(audio) // BLOCK_FRAMES + 1, bool)
    lost[[20, 40, 41, 60]] = True
    base = conceal_trace(audio, lost, gan)
    for n in (20, 41, 60):
        changed = audio.copy()
        end = (n + 1) * BLOCK_FRAMES
        changed[end:] = np.random.default_rng(n).uniform(-0.9, 0.9, changed[end:].shape).astype(np.float32)
        assert np.array_equal(conceal_trace(changed, lost, gan)[:end], base[:end]), f"packet {n}"


@pytest.mark.parametrize("kind", ["silence", "tiny", "white", "loud_noise", "clipped_square", "dc", "impulse", "nan"])
def test_no_nan_and_in_range_on_hard_inputs(gan, kind):
    rng = np.random.default_rng(7)
    t = np.arange(CTX)
    history = {
        "silence": np.zeros(CTX),
        "tiny": 1e-7 * rng.standard_normal(CTX),
        "white": 0.3 * rng.standard_normal(CTX),
        "loud_noise": np.clip(3.0 * rng.standard_normal(CTX), -1, 1),
        "clipped_square": np.sign(np.sin(2 * np.pi * 110 * t / 44_100)),
        "dc": np.full(CTX, 0.9),
        "impulse": np.eye(1, CTX, CTX - 3)[0],
        "nan": np.where(t % 97 == 0, np.nan, 0.2 * np.sin(2 * np.pi * 330 * t / 44_100)),
    }[kind].astype(np.float32)[:, None]
    for stage in gan.stages(history, 0):
        assert stage.shape == (PRED, 1)
        assert np.all(np.isfinite(stage)), kind
        assert np.max(np.abs(stage)) <= 1.0
    if kind == "silence":
        assert not np.any(gan.conceal(history, 0))


def test_where_the_lp_prediction_is_silent_the_refined_one_is_digital_silence(gan):
    """A note that stopped a packet ago: LPC predicts exact zeros; the refinement must not
    turn them into inverse-FFT rounding noise (~1e-13), which PLCMOS scores as damage."""
    t = np.arange(CTX)
    history = (0.3 * np.sin(2 * np.pi * 110 * t / 44_100)).astype(np.float32)
    history[-1024:] = 0.0
    lp, refined = list(gan.stages(history[:, None], 0))
    assert not np.any(lp)
    assert not np.any(refined)


def test_a_gap_quieter_than_the_training_data_is_left_to_lpc(gan):
    """Training skipped gaps under REFINE_MIN_RMS; at runtime such an LP prediction is
    played unrefined (the network would spread a noise floor there), a louder one is not."""
    from nmp_peer.conceal.gan import REFINE_MIN_RMS

    t = np.arange(CTX)
    tone = (np.sin(2 * np.pi * 220 * t / 44_100) + 0.3 * np.sin(2 * np.pi * 1500 * t / 44_100)).astype(np.float32)
    for level, refined_expected in ((0.3 * REFINE_MIN_RMS, False), (30 * REFINE_MIN_RMS, True)):
        lp, out = list(gan.stages((level * tone)[:, None], 0))
        assert (float(np.sqrt(np.mean(lp**2))) < REFINE_MIN_RMS) != refined_expected
        assert (not np.array_equal(lp, out)) == refined_expected, level


def test_refine_from_hz_keeps_the_lp_below_and_refines_above():
    from nmp_peer.conceal.gan import CHUNK_CONTEXT_SAMPLES, CHUNK_SAMPLES

    rng = np.random.default_rng(0)
    t = np.arange(CHUNK_SAMPLES)
    chunk = sum(0.1 * np.sin(2 * np.pi * f * t / 44_100 + rng.uniform(0, 6)) for f in (220, 1000, 3000, 9000, 13000))
    chunk = (chunk + 0.01 * rng.standard_normal(CHUNK_SAMPLES)).astype(np.float32)
    lp = chunk[CHUNK_CONTEXT_SAMPLES:]
    freqs = np.fft.rfftfreq(1024, 1 / 44_100)
    energy = {}
    for f0 in (0.0, 8000.0):
        front = SpectralFrontEnd(f0)
        feature, gap_spec, gain = front.analyze(chunk)
        np.testing.assert_allclose(front.synthesize(feature, gap_spec, gain)[0], lp, atol=1e-6)
        changed = feature * rng.uniform(0.5, 1.5, (1, feature.shape[1], 1)).astype(np.float32)
        diff = np.abs(np.fft.rfft((front.synthesize(changed, gap_spec, gain)[0] - lp) * np.hanning(1024))) ** 2
        energy[f0] = (diff[freqs < 5000].sum(), diff[freqs > 8000].sum())
    assert energy[0.0][0] > 1.0 and energy[0.0][1] > 1.0
    assert energy[8000.0][0] < 1e-6 * energy[0.0][0] and energy[8000.0][1] > 0.5 * energy[0.0][1]


@pytest.mark.slow
def test_runtime_does_not_import_torch():
    code = (
        "import sys, numpy as np\n"
        "from nmp_peer.conceal.gan import GanConcealer\n"
        "c = GanConcealer(); c.warm_up()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --------------------------------------------------------------------- spectral front end


def test_front_end_shapes_and_perfect_reconstruction():
    front = SpectralFrontEnd()
    rng = np.random.default_rng(8)
    noise = 0.3 * rng.standard_normal((2, CHUNK_SAMPLES))
    chunks = np.concatenate([noise, music_like(0.1)[:CHUNK_SAMPLES, 0][None]])
    feature, gap_spec, gain = front.analyze(chunks.astype(np.float32))
    assert feature.shape == (3, N_BINS, N_FRAMES) == (3, 256, 256)
    assert gap_spec.shape == (3, N_FRAMES - GAP_FRAME, N_BINS)
    assert feature.max() <= 1.0  # the input never exceeds the sigmoid's ceiling
    back = front.synthesize(feature, gap_spec, gain)
    np.testing.assert_allclose(back, chunks[:, CHUNK_CONTEXT_SAMPLES:], atol=1e-5)
    one = front.analyze(chunks[1])
    np.testing.assert_array_equal(one[0][0], feature[1])


def test_gap_frames_are_exactly_those_that_reach_the_prediction():
    front = SpectralFrontEnd()
    rng = np.random.default_rng(9)
    a = rng.standard_normal(CHUNK_SAMPLES).astype(np.float32)
    b = a.copy()
    b[CHUNK_CONTEXT_SAMPLES:] = rng.standard_normal(PRED)
    fa, fb = front.analyze(a)[0][0], front.analyze(b)[0][0]
    same = np.all(fa == fb, axis=0)
    assert same[:GAP_FRAME].all() and not same[GAP_FRAME:].any()


def test_frames_the_model_does_not_read_are_neither_computed_nor_read(gan):
    """The exported generator's output depends on no input frame before its
    ``input_from_frame``; the front end leaves those zero and the rest as before."""
    first = gan.input_from_frame
    assert 0 < first < GAP_FRAME
    x = music_like(0.2, seed=11)[:CHUNK_SAMPLES, 0]
    front = SpectralFrontEnd()
    full, full_gap, _ = front.analyze(x)
    part, part_gap, _ = front.analyze(x, first)
    np.testing.assert_array_equal(part[..., first:], full[..., first:])
    assert not part[..., :first].any()
    np.testing.assert_array_equal(part_gap, full_gap)

    def run(feature: np.ndarray) -> np.ndarray:
        return gan.session.run(None, {gan._input: feature[:, None]})[0]

    rng = np.random.default_rng(12)
    scrambled = full.copy()
    scrambled[..., :first] = rng.uniform(0, 1, scrambled[..., :first].shape)
    np.testing.assert_array_equal(run(scrambled), run(full))
    nudged = full.copy()
    nudged[..., first] = rng.uniform(0, 1, nudged.shape[1])
    assert not np.array_equal(run(nudged), run(full))


def test_feature_is_level_invariant():
    front = SpectralFrontEnd()
    x = music_like(0.2, seed=10)[:CHUNK_SAMPLES, 0]
    np.testing.assert_allclose(front.analyze(x)[0], front.analyze(0.01 * x)[0], atol=1e-4)


class SlowRefineGan(GanConcealer):
    """The shipped GAN on a machine too slow for its refinement (the LPC stage is not slowed)."""

    def refine(self, history: np.ndarray, lp: np.ndarray) -> np.ndarray:
        time.sleep(0.1)
        return super().refine(history, lp)


def _play_live(concealer, audio: np.ndarray, lost: set[int], pause_s: float, threaded: bool = True):
    config = PlayoutConfig(latency=LatencyPolicy(mode="fixed", depth_packets=2))
    engine = PlayoutEngine(concealer, config, threaded=threaded)
    packetizer = Packetizer(Pcm16Codec(), audio.shape[1])
    outs = []
    for k in range(len(audio) // BLOCK_FRAMES):
        packet = packetizer.packetize(audio[k * BLOCK_FRAMES : (k + 1) * BLOCK_FRAMES])
        if k not in lost:
            engine.push(packet, float(k * BLOCK_FRAMES))
        outs.append(engine.next_block(float(k * BLOCK_FRAMES)))
        time.sleep(pause_s)
    engine.close()
    return engine, np.concatenate(outs)


def test_a_late_refinement_plays_the_lpc_stage_and_is_counted():
    """At the deadline the engine takes the LPC prediction when the refined one is not
    ready, counts it as partial (not a miss), and plays exactly what LPC alone plays."""
    audio = music_like(1.0)
    lost = {20, 60}
    engine, out = _play_live(SlowRefineGan(), audio, lost, pause_s=0.01)
    assert engine.stats.packets_concealed == 2
    assert engine.stats.concealer_partial == 2 and engine.stats.concealer_misses == 0
    reference, ref_out = _play_live(LpcConcealer(), audio, lost, pause_s=0.0, threaded=False)
    assert reference.stats.concealer_partial == 0
    lat = engine.first_slot[1]
    assert lat == reference.first_slot[1]
    for k in lost:
        block = slice(lat + k * BLOCK_FRAMES, lat + (k + 1) * BLOCK_FRAMES)
        np.testing.assert_array_equal(out[block], ref_out[block])


@pytest.mark.slow
def test_a_refinement_in_time_is_played_whole(gan):
    audio = music_like(0.5)
    engine, _ = _play_live(gan, audio, {25}, pause_s=0.05)
    assert engine.stats.packets_concealed == 1
    assert engine.stats.concealer_partial == 0 and engine.stats.concealer_misses == 0


def _reference():
    from nmp_peer.conceal.gan_reference import ReferenceGanConcealer

    return ReferenceGanConcealer()


@pytest.mark.parametrize("channels", [1, 2])
def test_the_fast_pipeline_equals_the_one_before_it(gan, channels):
    """Issue 17's pipeline (stereo in one batched network call, the front end batched) gives
    what the pipeline before it gives (``gan_reference``, run here), within 1e-5, on music,
    on a stereo stream whose channels differ in level and content, and where one channel
    is too quiet to refine or holds NaNs."""
    reference = _reference()
    rng = np.random.default_rng(21)
    cases = [_history(seed=s, channels=channels) for s in range(4)]
    if channels == 2:
        mixed = _history(seed=8, channels=2)
        mixed[:, 1] = 0.3 * _history(seed=9)[:, 0] + 0.01 * rng.standard_normal(CTX).astype(np.float32)
        quiet = mixed.copy()
        quiet[:, 0] *= 1e-4  # its LP prediction is under REFINE_MIN_RMS: LPC alone
        broken = mixed.copy()
        broken[::97, 1] = np.nan
        cases += [mixed, quiet, broken]
    compared = 0
    for history in cases:
        fast = list(gan.stages(history, 0))
        ref = list(reference.stages(history, 0))
        assert len(fast) == len(ref) == 2
        for a, b in zip(fast, ref, strict=True):
            assert a.shape == b.shape == (PRED, channels)
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        compared += int(not np.array_equal(fast[0], fast[1]))
    assert compared >= 3  # the refinement ran, not only the LPC stage


def test_stereo_is_one_network_call_of_batch_two(gan):
    """Both channels' LPC, then one analysis, ONE network call and one synthesis."""
    seen: list[str] = []
    gan.set_stage_hook(seen.append)
    try:
        gan.conceal(_history(seed=2, channels=2), 0)
    finally:
        gan.set_stage_hook(None)
    assert seen == ["lpc_fit", "lpc_predict", "lpc_fit", "lpc_predict", "analysis_stft", "network", "synthesis"]
    shape = gan.session.get_inputs()[0].shape
    assert isinstance(shape[0], str) and shape[1:] == [1, N_BINS, N_FRAMES]  # a symbolic batch


def test_a_batch_of_two_gives_each_item_what_a_batch_of_one_gives(gan):
    rng = np.random.default_rng(5)
    x = (rng.uniform(0, 1, (2, 1, N_BINS, N_FRAMES)) ** 3).astype(np.float32)
    both = gan.session.run(None, {gan._input: x})[0]
    for i in range(2):
        np.testing.assert_allclose(both[i : i + 1], gan.session.run(None, {gan._input: x[i : i + 1]})[0], atol=1e-6)


def test_a_model_with_a_fixed_batch_of_one_still_conceals_stereo(gan, tmp_path: Path):
    """An older export (batch fixed at 1) runs once per channel, with the same result."""
    import onnx

    model = onnx.load(str(default_model_path()))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = 1
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    fixed = GanConcealer(path)
    history = _history(seed=6, channels=2)
    np.testing.assert_allclose(fixed.conceal(history, 0), gan.conceal(history, 0), atol=1e-6)


def _with_depth_to_space(model):
    """The shipped graph with each two-step interleave (``export.two_step_depth_to_space``)
    put back as the DCR ``DepthToSpace`` it replaced, and its Relu back after it: the
    generator as it was exported before issue 17."""
    from onnx import helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    drop: set[int] = set()
    replace: dict[int, list] = {}
    for node in graph.node:
        if node.op_type != "Reshape" or not node.input[1].endswith("_2step_s4"):
            continue
        chain = [node]
        while len(chain) < 5:
            chain.append(producer[chain[-1].input[0]])
        source = chain[-1].input[0]  # the first Reshape's input: the phases' Concat
        concat = producer[source]
        relus = [producer[x] for x in concat.input]
        assert all(r.op_type == "Relu" for r in relus)
        joined = source + "_unrelu"
        restored = [
            helper.make_node("Concat", [r.input[0] for r in relus], [joined], axis=1),
            helper.make_node("DepthToSpace", [joined], [node.output[0] + "_d2s"], blocksize=2, mode="DCR"),
            helper.make_node("Relu", [node.output[0] + "_d2s"], list(node.output)),
        ]
        drop |= {id(n) for n in [*chain, concat, *relus]}
        replace[id(chain[-1])] = restored
    nodes = []
    for node in graph.node:
        if id(node) in replace:
            nodes += replace[id(node)]
        elif id(node) not in drop:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [t for t in graph.initializer if "_2step_" not in t.name]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(replace)


def test_the_shipped_graph_gives_what_the_depth_to_space_one_gave(gan, tmp_path: Path):
    """The interleaves rewritten as two one-axis transposes (and the Relus moved onto the
    phases) move values, nothing else: the old graph's outputs, bit for bit, through the
    reference pipeline."""
    import onnx

    from nmp_peer.conceal.gan_reference import ReferenceGanConcealer

    model = onnx.load(str(default_model_path()))
    assert _with_depth_to_space(model) == 4
    onnx.checker.check_model(model)
    path = tmp_path / "depth_to_space.onnx"
    onnx.save(model, str(path))
    assert sum(n.op_type == "DepthToSpace" for n in model.graph.node) == 4
    old = ReferenceGanConcealer(path)
    for seed, channels in ((0, 1), (1, 2), (2, 2)):
        history = _history(seed=seed, channels=channels)
        np.testing.assert_allclose(gan.conceal(history, 0), old.conceal(history, 0), rtol=0, atol=1e-5)
    x = (np.random.default_rng(3).uniform(0, 1, (2, 1, N_BINS, N_FRAMES)) ** 3).astype(np.float32)
    np.testing.assert_array_equal(gan.session.run(None, {gan._input: x})[0], old.session.run(None, {old._input: x})[0])
