"""The training pipeline end to end on a few seconds of audio: cache, train, resume, export, run.

Needs the ``train`` extra (PyTorch, onnx); skipped only when PyTorch is not installed.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import music_like  # noqa: E402

from nmp_peer.audio_io import write_audio  # noqa: E402
from nmp_peer.conceal.gan import (  # noqa: E402
    CHUNK_CONTEXT_SAMPLES,
    CHUNK_SAMPLES,
    FEATURE_CEILING,
    GanConcealer,
    SpectralFrontEnd,
)
from nmp_peer.conceal.lpc import LpcConcealer  # noqa: E402
from nmp_peer.train import losses  # noqa: E402
from nmp_peer.train.batches import DeviceChunks  # noqa: E402
from nmp_peer.train.config import CONF_DIR, ConfigError, load_config  # noqa: E402
from nmp_peer.train.data import DataSettings, make_examples  # noqa: E402
from nmp_peer.train.export import export  # noqa: E402
from nmp_peer.train.frontend import TorchFrontEnd  # noqa: E402
from nmp_peer.train.model import Discriminator, Generator, count_parameters, model_info  # noqa: E402
from nmp_peer.train.train import main, train  # noqa: E402
from nmp_peer.train.trainer import lr_at  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    for split, seeds in (("train", (0, 1)), ("valid", (2,))):
        (root / split).mkdir()
        for seed in seeds:
            write_audio(root / split / f"clip{seed}.wav", music_like(1.5, seed=seed))
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_train_resume_export_and_run(data_dir: Path, tmp_path: Path):
    config = load_config("tiny")
    out = tmp_path / "run"
    trainer = train(config, data_dir, out, progress=False)
    assert trainer.step == config.optim.steps == 4
    for name in ("last.pt", "best.pt", "train_log.csv", "valid_log.csv", "losses.png", "valid.png"):
        assert (out / name).is_file(), name
    assert [int(r["step"]) for r in _rows(out / "train_log.csv")] == [1, 2, 3, 4]
    valid = _rows(out / "valid_log.csv")
    assert [int(r["step"]) for r in valid] == [2, 4]
    assert all(np.isfinite(float(r[k])) for r in valid for k in ("lsd_db", "snr_db", "lsd_lpc_db"))

    # resume: picks up at step 4, continues to 6, logs stay one row per step
    before = torch.load(out / "last.pt", weights_only=False)["generator"]
    trainer = train(config, data_dir, out, stop_at=6, progress=False)
    assert trainer.step == 6
    assert [int(r["step"]) for r in _rows(out / "train_log.csv")] == [1, 2, 3, 4, 5, 6]
    after = torch.load(out / "last.pt", weights_only=False)["generator"]
    assert any(not torch.equal(before[k], after[k]) for k in before)

    onnx_path = tmp_path / "tiny.onnx"
    info = export(out / "best.pt", onnx_path)
    assert info["parity_max_abs_diff"] < 1e-4
    assert info["parameters"] == count_parameters(Generator(2))

    gan = GanConcealer(model_path=onnx_path)
    history = music_like(0.2, seed=3)[-gan.context_samples :]
    out_gan = gan.conceal(history, 0)
    assert out_gan.shape == (1024, 1) and np.all(np.isfinite(out_gan))
    # the batch is symbolic: a stereo packet is one call of batch 2 (parity above covers batches too)
    assert isinstance(gan.session.get_inputs()[0].shape[0], str)
    stereo = np.ascontiguousarray(music_like(0.2, channels=2, seed=5)[-gan.context_samples :])
    both = gan.conceal(stereo, 0)
    for ch in range(2):
        np.testing.assert_allclose(both[:, ch], gan.conceal(stereo[:, ch : ch + 1], 0)[:, 0], atol=1e-6)


@pytest.mark.slow
def test_a_few_steps_in_the_resynthesis_domain(data_dir: Path, tmp_path: Path):
    config = load_config("tiny")
    config = config.model_copy(update={"loss": config.loss.model_copy(update={"domain": "resynthesis"})})
    trainer = train(config, data_dir, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run" / "train_log.csv")
    assert trainer.step == 4 and all(np.isfinite(float(r["sc"])) and np.isfinite(float(r["log_mag"])) for r in rows)


def test_untrained_residual_generator_returns_the_lpc_prediction(tmp_path: Path):
    """Its last layer starts at zero: before training the concealer is LPC alone."""
    config = load_config("tiny")
    path = tmp_path / "init.pt"
    torch.save({"config": config.to_dict(), "generator": Generator(2).state_dict(), "step": 0}, path)
    export(path, tmp_path / "init.onnx")
    gan = GanConcealer(model_path=tmp_path / "init.onnx")
    history = music_like(0.2, seed=4)[-gan.context_samples :]
    lp, refined = list(gan.stages(history, 0))
    np.testing.assert_allclose(refined, lp, atol=2e-4)


def test_generator_sizes_match_the_report():
    assert count_parameters(Generator(16)) == 80_641  # the authors' configs: ~81 K
    assert abs(count_parameters(Generator(64)) - 1_152_449) < 1_000  # the report's Table I
    info = model_info(16)
    assert info["parameters"] == 80_641 and 50e6 < info["macs"] < 100e6
    assert count_parameters(Discriminator()) > 0


@pytest.mark.parametrize("form", ["train", "export"])
def test_computation_forms_are_the_same_function(form: str):
    torch.manual_seed(0)
    g = Generator(4).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.2)
    x = torch.rand(2, 1, 256, 256) * 0.5
    g.set_form("separable")
    reference = g(x)
    g.set_form(form)
    torch.testing.assert_close(g(x), reference, atol=1e-5, rtol=1e-4)


def test_generator_restricted_to_the_gap_frames_is_the_same_function():
    """``set_output_from``: every block computes only the frames its outputs need, and the
    result is the full network's frames 177.. exactly; input frames before
    ``input_from()`` reach nothing, the one at it does."""
    torch.manual_seed(1)
    g = Generator(4).eval()
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0, 0.3)
    x = (torch.rand(1, 1, 256, 256) * 0.5).requires_grad_()
    g.set_form("export")
    full = g(x)[..., 177:]
    g.set_output_from(177)
    part = g(x)
    torch.testing.assert_close(part, full, atol=1e-6, rtol=0)
    part.sum().backward()
    reach = x.grad.abs().sum(dim=(0, 1, 2)) > 0
    first = g.input_from()
    assert 0 < first < 177 and reach[first] and not reach[:first].any()


def test_played_features_are_what_the_runtime_plays():
    """The ``resynthesis`` loss domain: torch's differentiable copy of the runtime's
    inversion (LP phase, overlap-add, crossfade from LP), analysed again on the input's
    scale, equals the numpy front end's, and gives back the input for an unchanged one."""
    numpy_front, torch_front = SpectralFrontEnd(), TorchFrontEnd(torch.device("cpu"))
    rng = np.random.default_rng(13)
    chunks = np.stack([music_like(0.1, seed=14)[:CHUNK_SAMPLES, 0], rng.uniform(-0.5, 0.5, CHUNK_SAMPLES)])
    chunks = chunks.astype(np.float32)
    feature, gap_spec, gain = numpy_front.analyze(chunks)
    refined = np.clip(feature * (1 + 0.3 * rng.standard_normal(feature.shape)), 0, 1).astype(np.float32)
    lp = chunks[:, CHUNK_CONTEXT_SAMPLES:]
    played = numpy_front.crossfade(lp, numpy_front.synthesize(refined, gap_spec, gain))
    expected = numpy_front.target_features(np.concatenate([chunks[:, :CHUNK_CONTEXT_SAMPLES], played], 1), gain)
    refined_t = torch.from_numpy(refined).requires_grad_()
    got = torch_front.played_features(refined_t, torch.from_numpy(chunks), torch.from_numpy(gain))
    np.testing.assert_allclose(got.detach().numpy(), expected, atol=1e-4)  # float32 STFTs
    same = torch_front.played_features(torch.from_numpy(feature), torch.from_numpy(chunks), torch.from_numpy(gain))
    np.testing.assert_allclose(same.numpy(), feature, atol=1e-4)
    silent = torch.zeros(1, CHUNK_SAMPLES)
    zero = torch.zeros(1, 256, 256, requires_grad=True)
    torch_front.played_features(zero, silent, torch.full((1,), 1e-6)).sum().backward()
    assert torch.isfinite(zero.grad).all()  # silent bins: no NaN gradient


def test_front_end_matches_torch_stft():
    x = music_like(0.2, seed=5)[:CHUNK_SAMPLES, 0]
    feature, _, gain = SpectralFrontEnd().analyze(x)
    spec = (
        torch.stft(
            torch.from_numpy(x).double(),
            511,
            16,
            511,
            torch.hann_window(511, dtype=torch.float64),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        .abs()
        .numpy()
    )
    np.testing.assert_allclose(feature[0], np.sqrt(spec / gain[0]) / FEATURE_CEILING, atol=1e-4)


def test_training_batches_match_the_runtime_front_end():
    """Training makes its batches in torch (on the GPU when there is one); they must be the
    numpy front end's features of the same LP-filled examples."""
    audio = music_like(1.0, seed=7)[:, 0]
    chunks = make_examples(audio, DataSettings(chunks_per_second=6.0, burst_fraction=0.5), [1])
    index = np.arange(len(chunks))
    sign = np.where(index % 2 == 0, 1.0, -1.0).astype(np.float32)[:, None]
    inp_t, clean_t = DeviceChunks(chunks, torch.device("cpu")).batch(index, sign)
    inp, clean = chunks.batch(index)
    np.testing.assert_array_equal(inp_t.numpy(), inp * sign)
    np.testing.assert_array_equal(clean_t.numpy(), clean * sign)
    front = TorchFrontEnd(torch.device("cpu"))
    feature_t, gain_t = front.analyze(inp_t)
    feature, _, gain = SpectralFrontEnd().analyze(inp * sign)
    np.testing.assert_allclose(gain_t.numpy(), gain, rtol=1e-6)
    np.testing.assert_allclose(feature_t.numpy(), feature, atol=3e-4)  # sqrt of float32 FFT noise
    target = SpectralFrontEnd().target_features(clean * sign, gain)
    np.testing.assert_allclose(front.target_features(clean_t, gain_t).numpy(), target, atol=3e-4)


def test_examples_are_lp_filled_from_the_past_only():
    audio = music_like(1.0, seed=6)[:, 0]
    chunks = make_examples(audio, DataSettings(chunks_per_second=4.0, burst_fraction=0.0), [0])
    assert len(chunks) > 0
    inp, clean = chunks.batch(np.arange(len(chunks)))
    np.testing.assert_array_equal(inp[:, :CHUNK_CONTEXT_SAMPLES], clean[:, :CHUNK_CONTEXT_SAMPLES])
    # the LP part is what the runtime's LPC predicts from the 3584 samples before the gap
    start = next(
        s
        for s in range(len(audio) - CHUNK_SAMPLES)
        if np.array_equal(np.round(audio[s : s + CHUNK_SAMPLES] * 32768), clean[0] * 32768)
    )
    history = audio[start + CHUNK_CONTEXT_SAMPLES - 3584 : start + CHUNK_CONTEXT_SAMPLES, None]
    lp = LpcConcealer().conceal(history, 0)[:, 0]
    np.testing.assert_allclose(inp[0, CHUNK_CONTEXT_SAMPLES:], lp, atol=1.0 / 32768)


def test_losses_are_zero_for_a_perfect_prediction():
    m = torch.rand(2, 1, 256, 79)
    assert float(losses.spectral_convergence(m, m)) == 0.0
    assert float(losses.log_magnitude(m, m)) == 0.0
    assert float(losses.lsgan_discriminator(torch.ones(3), torch.zeros(3))) == 0.0


def test_cosine_schedule_ends_at_half():
    config = load_config("bin2bin_v2")
    assert lr_at(0, config) == pytest.approx(2e-4)
    assert lr_at(config.optim.steps, config) == pytest.approx(1e-4)
    assert lr_at(10 * config.optim.steps, config) == pytest.approx(1e-4)


def test_config_refuses_unknown_keys(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    tiny = CONF_DIR / "tiny.toml"
    bad.write_text(f'base = "{tiny}"\n[optim]\nlearning_rate = 1.0\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: optim\.learning_rate: unknown key$"):
        load_config(bad)
    paper = load_config("bin2bin_v2")
    assert (paper.loss.spectral_weight, paper.loss.adversarial_weight) == (10.0, 1.0)
    assert paper.loss.generator_steps_per_discriminator_step == 10
    assert (paper.optim.lr, paper.optim.betas, paper.optim.batch_size) == (2e-4, (0.9, 0.999), 16)


def test_oracle_bound_beats_lpc(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """The true magnitude with the LP phase must score better than LPC alone (the bound
    the model card quotes is this command's output on the real validation split)."""
    tiny = CONF_DIR / "tiny.toml"
    assert (
        main(["--config", str(tiny), "--data", str(data_dir), "--out", str(tmp_path), "--oracle", "--no-progress"]) == 0
    )
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["oracle"]["lsd"] < scores["lpc"]["lsd"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[optim]\nbatch_size = 0\n", "optim.batch_size: Input should be greater than or equal to 1"),
        ('[loss]\ndomain = "played"\n', "loss.domain: Input should be 'output' or 'resynthesis'"),
        ("[optim]\nbatch_size = 1\n", 'optim.batch_size: must be >= 2 with model.norm = "batch"'),
        ("[optim]\nbetas = [0.9, 1.5]\n", "optim.betas.1: Input should be less than 1"),
        ("[train]\nthreads = 0\n", "train.threads: Input should be greater than or equal to 1"),
        ("model = 3\n", "model: Input should be a valid dictionary"),
        ("[optim\n", "not valid TOML"),
    ],
)
def test_a_bad_value_is_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'base = "{CONF_DIR / "bin2bin_v2.toml"}"\n{text}')
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert str(err.value).startswith(f"{bad}: ") and message in str(err.value) and "\n" not in str(err.value)


def test_an_error_in_a_base_names_the_base_and_loops_are_refused(tmp_path: Path):
    (tmp_path / "a.toml").write_text("[train]\nema_decay = 1.0\n")
    (tmp_path / "b.toml").write_text('base = "a.toml"\n[optim]\nsteps = 10\n')
    with pytest.raises(ConfigError, match=r"a\.toml: train\.ema_decay: Input should be less than 1"):
        load_config(tmp_path / "b.toml")
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "b.toml")


def test_the_training_config_error_is_the_peers():
    import nmp_peer.config

    assert ConfigError is nmp_peer.config.ConfigError


def test_steps_override_the_schedule_and_a_checkpoint_config_round_trips():
    from nmp_peer.train.config import config_from_dict

    config = load_config("bin2bin_v2_cpu", steps=300)
    assert config.optim.steps == 300 and config.optim.lr == 2e-4 and config.name == "bin2bin_v2_cpu"
    assert lr_at(300, config) == pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="--steps: optim.steps"):
        load_config("tiny", steps=0)
    stored = load_config("bin2bin_v2_cpu_packet")
    assert config_from_dict(stored.to_dict()) == stored


@pytest.mark.slow
def test_the_steps_flag_sets_the_schedule_and_is_recorded(data_dir: Path, tmp_path: Path):
    """``--steps`` replaces a copy of the config with another ``optim.steps`` (what
    scripts/gpu-burst.sh used to write); ``--stop-at`` stops without changing the schedule."""
    out = tmp_path / "run"
    common = ["--data", str(data_dir), "--out", str(out), "--no-progress", "--device", "cpu"]
    assert main(["--config", "tiny", "--steps", "3", *common]) == 0
    state = torch.load(out / "last.pt", weights_only=False)
    assert state["step"] == 3 and state["config"]["optim"]["steps"] == 3 and state["config"]["name"] == "tiny"
    assert [float(r["lr"]) for r in _rows(out / "train_log.csv")][0] == pytest.approx(2e-4)
    assert main(["--config", "tiny", "--steps", "3", "--stop-at", "5", *common]) == 0
    rows = _rows(out / "train_log.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5] and float(rows[-1]["lr"]) == pytest.approx(1e-4)
    with pytest.raises(SystemExit, match=r"^error: --steps: optim.steps: Input should be greater than or equal to 1$"):
        main(["--config", "tiny", "--steps", "0", *common])


def test_conf_train_holds_the_reference_the_shipped_recipe_and_tiny():
    """Finished experiments live in ``conf/train/experiments/`` and load by their plain name."""
    assert sorted(p.stem for p in CONF_DIR.glob("*.toml")) == [
        "bin2bin_v2",
        "bin2bin_v2_cpu",
        "bin2bin_v2_cpu_packet",
        "tiny",
    ]
    shipped = load_config("bin2bin_v2_cpu_packet")  # the ONNX model's config_name
    assert (shipped.optim.steps, shipped.loss.loss_frames, shipped.data.max_valid_chunks) == (2600, "packet", 128)
    assert (shipped.optim.lr, shipped.train.valid_every, shipped.model.features) == (2e-4, 150, 16)
    noadv = load_config("bin2bin_v2_cpu_noadv")
    assert (noadv.loss.adversarial_weight, noadv.optim.steps, noadv.loss.loss_frames) == (0.0, 800, "packet")
    gpu = load_config("bin2bin_v2_gpu_flac", steps=10200)  # GPU 2 of docs/model-card.md
    assert (gpu.optim.lr, gpu.optim.batch_size, gpu.optim.steps, gpu.data.chunks_per_second) == (1e-4, 32, 10200, 100.0)
