"""A model kept in a local folder (config.json + weights + tokenizer) is used without asking
the Hub for anything, and the demo model can be converted and run from its folder."""

import json

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx import models
from moshi_mlx.cli.convert import run as convert
from moshi_mlx.cli.run_inference import main as run_inference
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))


def _audio(path, seconds=0.8):
    t = np.arange(int(24000 * seconds)) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)


def test_local_pytorch_file_uses_its_folder(tmp_path, offline):
    d = models.lm_preset("random-tiny").to_dict()
    d.update(card=2048, n_q=16, dep_q=8, delays=[0] + ([0] + [1] * 7) * 2)  # fits the published Mimi
    cfg = models.LmConfig.from_dict(d)
    folder = tmp_path / "my-model"
    weights = write_random_checkpoint(cfg, folder, seed=3, dtype="float32")
    import sentencepiece as spm

    (tmp_path / "c.txt").write_text("bonjour le monde hello world\n" * 30)
    spm.SentencePieceTrainer.Train(
        input=str(tmp_path / "c.txt"), model_prefix=str(folder / "tokenizer_spm_32k_3"), vocab_size=16, minloglevel=2
    )
    _audio(tmp_path / "in.wav")
    rc = run_inference(
        [
            str(tmp_path / "in.wav"),
            str(tmp_path / "out.wav"),
            "--moshi-weight",
            str(weights),
            "--mimi-weight",
            "random",
            "--quiet",
        ]
    )
    assert rc == 0
    assert sf.info(str(tmp_path / "out.wav")).frames == 10 * 1920


def test_convert_demo_model_and_run_it(tmp_path, offline, capsys):
    out = tmp_path / "tiny-q4"
    assert convert(["--model", "random-tiny", "--out", str(out), "-q", "--quiet"]) == 0
    conf = json.loads((out / "config.json").read_text())
    assert conf["quantization"]["bits"] == 4 and (out / "model.q4.safetensors").exists()
    lm = models.load_lm(out)
    assert lm.cfg.card == 64
    # it runs from its folder with a random Mimi of the demo's size (the published one would not fit)
    _audio(tmp_path / "in.wav")
    rc = run_inference(
        [
            str(tmp_path / "in.wav"),
            str(tmp_path / "out.wav"),
            "--moshi-weight",
            str(out),
            "--mimi-weight",
            "random",
            "--tokenizer",
            "none",
            "--quiet",
        ]
    )
    assert rc == 0 and sf.info(str(tmp_path / "out.wav")).frames == 10 * 1920
    # a Mimi that does not belong to the LM (the published architecture) is refused with a clear message
    import mlx.core as mx

    from moshi_mlx.models.mimi_config import mimi_202407
    from moshi_mlx.weights.mimi_keys import random_published_weights
    from moshi_mlx.weights.safetensors_io import save_safetensors

    mimi = tmp_path / "mimi.safetensors"
    save_safetensors(mimi, {k: mx.array(v) for k, v in random_published_weights(mimi_202407(), seed=0).items()})
    rc = run_inference(
        [
            str(tmp_path / "in.wav"),
            "--moshi-weight",
            str(out),
            "--mimi-weight",
            str(mimi),
            "--mimi-backend",
            "mlx",
            "--tokenizer",
            "none",
            "--quiet",
        ]
    )
    assert rc == 2
    assert "2048 entries per codebook but the LM expects card 64" in capsys.readouterr().err
    assert convert(["--model", "random-tiny", "tiny.safetensors", "--out", str(tmp_path / "x")]) == 2


def test_convert_of_the_demo_model_names_it_not_its_temporary_folder(tmp_path, offline, capsys):
    """`convert --model random-tiny` printed 'source: /tmp/moshi_mlx_random-tiny_XXXX/model.safetensors
    (config: /tmp/...)', a folder gone once it exits; with --eval the report and its quality.json
    named it too. Now the demo is named as given."""
    out = tmp_path / "tiny-q8"
    argv = ["--model", "random-tiny", "--out", str(out), "-q", "8", "--quiet", "--eval", "--eval-frames", "3"]
    assert convert(argv) == 0
    stdout = capsys.readouterr().out
    assert "source: --model random-tiny (config: preset random-tiny)\n" in stdout, stdout
    assert "\nquality vs --model random-tiny: " in stdout, stdout
    assert "moshi_mlx_random-tiny_" not in stdout, stdout
    assert json.loads((out / "quality.json").read_text())["reference"] == "--model random-tiny"
