"""Every tool that runs a model says what it loaded, in one line on stderr and the same words
(`cli.model_args.say_loaded`): the repo or folder, the weights file and how it stores the LM,
where the Mimi and the tokenizer came from. Before, only the demo models were named (a NOTE);
`moshi-local --hf-repo DIR` said nothing of the model it ran."""

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli import helium, local, local_web, run_inference, stt, tts
from moshi_mlx.cli.convert import run as convert
from moshi_mlx.models import LmConfig, lm_preset
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

from .model_folders import random_model_folder


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))


@pytest.fixture
def q8(tmp_path, offline):
    """The demo model converted to 8 bits: a real model folder (its tokenizer, a random Mimi)."""
    out = tmp_path / "tiny-q8"
    assert convert(["--model", "random-tiny", "--out", str(out), "-q", "8", "--quiet"]) == 0
    sf.write(tmp_path / "in.wav", np.zeros(6 * 1920, np.float32), 24000)
    return out


def _loaded(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("loaded ")]
    assert len(lines) == 1, err
    return lines[0]


def _moshi_line(folder) -> str:
    return (
        f"loaded {folder}: model.q8.safetensors (8-bit affine g64), random Mimi (NOISE), "
        "tokenizer demo_tokenizer.model; "
    )


def test_run_inference_says_it_on_stderr_and_keeps_stdout_for_the_transcript(q8, tmp_path, capsys):
    assert run_inference.main([str(tmp_path / "in.wav"), "--hf-repo", str(q8)]) == 0
    cap = capsys.readouterr()
    assert _loaded(cap.err).startswith(_moshi_line(q8)), cap.err
    assert str(q8) not in cap.out and "NOTE" not in cap.err, cap


def test_local_says_it(q8, tmp_path, capsys):
    argv = ["--simulate", str(tmp_path / "in.wav"), "--duration", "0.2", "--hf-repo", str(q8)]
    assert local.main(argv) == 0
    assert _loaded(capsys.readouterr().err).startswith(_moshi_line(q8))


def test_web_says_it_before_serving(q8, capsys, monkeypatch):
    import moshi_mlx.web.server as server

    monkeypatch.setattr(server, "serve", lambda *a, **k: None)
    assert local_web.main(["--port", "0", "--hf-repo", str(q8)]) == 0
    assert _loaded(capsys.readouterr().err).startswith(_moshi_line(q8))


def test_helium_says_it_and_stdout_is_the_text_alone(q8, capsys):
    """A text tool: no codec, said as 'no Mimi'; the line never reaches the generated text."""
    assert helium.main(["hello", "--hf-repo", str(q8), "-n", "3"]) == 0
    cap = capsys.readouterr()
    line = _loaded(cap.err)
    assert line.startswith(f"loaded {q8}: model.q8.safetensors (8-bit affine g64), no Mimi, tokenizer "), line
    assert str(q8) not in cap.out and cap.out.startswith("hello"), cap.out


def test_stt_says_it_with_the_given_mimi_and_no_tokenizer(tmp_path, offline, capsys):
    src = random_model_folder(tmp_path / "stt", "random-tiny-stt")
    sf.write(tmp_path / "in.wav", np.zeros(4 * 1920, np.float32), 24000)
    argv = [str(tmp_path / "in.wav"), "--hf-repo", str(src), "--mimi-weight", "random", "--tokenizer", "none"]
    assert stt.main([*argv, "--quiet"]) == 0
    line = _loaded(capsys.readouterr().err)
    assert line.startswith(
        f"loaded {src}: model.safetensors (bf16), random Mimi (NOISE), no tokenizer (token ids); "
    ), line


def test_tts_says_it_with_a_quantization_made_at_load(tmp_path, offline, capsys):
    import sentencepiece as spm

    d = lm_preset("tts-tiny").to_dict()
    d.update(card=2048, tokenizer_name="tok.model")
    folder = tmp_path / "tts-model"
    write_random_checkpoint(LmConfig.from_dict(d), folder, seed=4, dtype="bfloat16", name="dsm_tts.safetensors")
    (tmp_path / "c.txt").write_text("bonjour le monde hello world speak this text\n" * 30)
    spm.SentencePieceTrainer.Train(
        input=str(tmp_path / "c.txt"), model_prefix=str(folder / "tok"), vocab_size=24, minloglevel=2
    )
    argv = ["hi", str(tmp_path / "o.wav"), "--hf-repo", str(folder), "--voice", "random", "--mimi-weight", "random"]
    assert tts.main([*argv, "-q", "8", "--max-steps", "5", "--quiet"]) == 0
    line = _loaded(capsys.readouterr().err)
    assert line.startswith(
        f"loaded {folder}: dsm_tts.safetensors (bf16, quantized to 8 bits at load), random Mimi (NOISE), "
        "tokenizer tok.model; "
    ), line


def test_a_mimi_file_is_named_with_its_backend():
    """The codec part names the file as it was given, the backend, and another repo's cache
    when it came from there (`ModelFiles.mimi_note`)."""
    from types import SimpleNamespace

    from moshi_mlx.runtime.loading import mimi_source

    files = SimpleNamespace(mimi="tokenizer-e351c8d8-checkpoint125.safetensors", mimi_note=None)
    assert mimi_source(files, "rustymimi") == "Mimi tokenizer-e351c8d8-checkpoint125.safetensors via rustymimi"
    files.mimi_note = "X from kyutai/moshiko-mlx-q4"
    assert mimi_source(files, "mlx").endswith("via mlx (X from kyutai/moshiko-mlx-q4)")


def test_the_device_is_named_not_printed_as_mlxs_object(q8, capsys):
    """The compute part names the device kind ('on cpu'), not MLX's repr 'Device(cpu, 0)'."""
    assert helium.main(["hello", "--hf-repo", str(q8), "-n", "2"]) == 0
    line = _loaded(capsys.readouterr().err)
    assert line.endswith(" activations on cpu") or " activations on cpu," in line, line
    assert "Device(" not in line, line
