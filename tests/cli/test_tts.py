"""`python -m moshi_mlx.tts` end to end on the offline tts-tiny demo model, and its bad inputs."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli.tts import main

DEMO = ["--model", "tts-tiny", "--voice", "random", "--quiet"]


def test_file_output_with_transcript(tmp_path, capsys):
    out, tr = tmp_path / "out.wav", tmp_path / "words.json"
    assert main(["Hello world, this is a test.", str(out), "--transcript", str(tr), "--seed", "5"] + DEMO) == 0
    audio, sr = sf.read(out)
    assert sr == 24000 and len(audio) > 0 and len(audio) % 1920 == 0 and np.abs(audio).max() > 0
    words = json.loads(tr.read_text())["words"]
    assert [w["word"] for w in words] == ["Hello", "world,", "this", "is", "a", "test."]
    assert all(b["start"] > a["start"] for a, b in zip(words, words[1:]))
    assert words[-1]["start"] < len(audio) / 24000
    assert "x real time" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.partial*"))


def test_same_seed_same_audio_and_text_file(tmp_path):
    (tmp_path / "t.txt").write_text("Bonjour tout le monde.\n", encoding="utf-8")
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert main(["Bonjour tout le monde.", str(a), "--seed", "9"] + DEMO) == 0
    assert main(["--text-file", str(tmp_path / "t.txt"), str(b), "--seed", "9"] + DEMO) == 0
    assert np.array_equal(sf.read(a)[0], sf.read(b)[0])


def test_text_from_stdin(tmp_path, monkeypatch):
    out = tmp_path / "s.wav"
    monkeypatch.setattr(sys, "stdin", io.StringIO("Text from standard input."))
    assert main(["-", str(out)] + DEMO) == 0
    assert sf.info(out).frames > 0


def test_python_m_entry_point_reads_piped_text(tmp_path):
    out = tmp_path / "p.wav"
    r = subprocess.run(
        [sys.executable, "-m", "moshi_mlx.tts", "-", str(out)] + DEMO,
        input="piped words",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert sf.info(out).frames > 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["hello", "{tmp}/o.wav", "--model", "tts-tiny"], "--voice is required"),
        (["   ", "{tmp}/o.wav"] + DEMO, "the text to speak is empty"),
        (["hello", "{tmp}/no/such/dir/o.wav"] + DEMO, "folder {tmp}/no/such/dir does not exist"),
        (["hello", "{tmp}/o.xyz"] + DEMO, "has '.xyz'; expected .wav"),
        (["hello", "{tmp}/o.wav", "--seed", "-1"] + DEMO, "--seed"),
        (["hello", "{tmp}/o.wav", "--temp", "nan"] + DEMO, "--temp"),
        (["hello", "{tmp}/o.wav", "--transcript", "{tmp}/o.wav"] + DEMO, "are the same file"),
        (
            ["hello", "{tmp}/o.wav", "--model", "tts-tiny", "--voice", "{tmp}/missing.safetensors"],
            "voice file not found",
        ),
        (["hello", "{tmp}/o.wav", "--cfg-coef", "2.2"] + DEMO, "--cfg-coef 2.2 is not one this model takes: 1.0, 1.5"),
        (["--text-file", "{tmp}/nothing.txt", "{tmp}/o.wav"] + DEMO, "text file not found"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert errors == [lines[-1]] and not any("Traceback" in ln for ln in lines)
    assert message.replace("{tmp}", str(tmp_path)) in lines[-1]
    assert not (tmp_path / "o.wav").exists()


def test_a_local_audio_file_is_not_a_voice(tmp_path, capsys):
    """It was looked up in the voice repo (whose names end in .wav too) and not found there."""
    me = tmp_path / "me.wav"
    sf.write(me, np.zeros(2400, np.float32), 24000)
    assert main(["hello", str(tmp_path / "o.wav"), "--model", "tts-tiny", "--voice", str(me)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "is a local file, not a voice" in err[-1]
    assert not (tmp_path / "o.wav").exists()


def test_existing_output_is_kept(tmp_path, capsys):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    assert main(["hello", str(out)] + DEMO) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"
    assert main(["hello", str(out), "--force"] + DEMO) == 0
    assert sf.info(out).frames > 0


@pytest.mark.parametrize("stop", ["ctrl-c", "disk-full"])
def test_outfile_and_transcript_are_replaced_together(tmp_path, capsys, monkeypatch, stop):
    """A Ctrl-C (or a failure) as --transcript is written, over an earlier run's files (--force):
    both keep the earlier run's content (the audio was renamed into place first: new audio beside
    the old transcript); without one, both are replaced."""
    from moshi_mlx.cli import tts
    from moshi_mlx.errors import OutputError

    out, tr = tmp_path / "o.wav", tmp_path / "t.json"
    out.write_bytes(b"earlier audio")
    tr.write_text('{"words": []}')
    argv = ["hello", str(out), "--transcript", str(tr), "--force"] + DEMO
    real = tts.write_text

    def fails(path, text):
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise OutputError(f"cannot write {path}: no space left on device")

    monkeypatch.setattr(tts, "write_text", fails)
    assert main(argv) == (130 if stop == "ctrl-c" else 2)
    assert out.read_bytes() == b"earlier audio" and tr.read_text() == '{"words": []}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav", "t.json"]  # no temporary left
    monkeypatch.setattr(tts, "write_text", real)
    assert main(argv) == 0
    assert sf.info(out).frames > 0 and json.loads(tr.read_text())["words"]
    capsys.readouterr()


def test_voice_file_in_the_published_layout(tmp_path):
    from moshi_mlx.weights.safetensors_io import save_safetensors

    import mlx.core as mx

    v = tmp_path / "v.safetensors"
    save_safetensors(
        v, {"speaker_wavs": mx.array(np.random.default_rng(0).standard_normal((1, 32, 20)), dtype=mx.float32)}
    )
    assert main(["hi there", str(tmp_path / "o.wav"), "--model", "tts-tiny", "--voice", str(v), "--quiet"]) == 0
    bad = tmp_path / "bad.safetensors"
    save_safetensors(bad, {"other": mx.zeros((1, 32, 20))})
    assert main(["hi", str(tmp_path / "o2.wav"), "--model", "tts-tiny", "--voice", str(bad), "--quiet"]) == 2


@pytest.fixture
def tts_folder(tmp_path, monkeypatch):
    """A TTS model folder as on the Hub (config.json, PyTorch-layout weights, SentencePiece
    tokenizer), small, with codebooks that fit the published Mimi; the Hub is off."""
    import sentencepiece as spm

    from moshi_mlx.models import LmConfig, lm_preset
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    d = lm_preset("tts-tiny").to_dict()
    d.update(card=2048, tokenizer_name="tok.model", _source="test TTS folder")
    folder = tmp_path / "tts-model"
    write_random_checkpoint(LmConfig.from_dict(d), folder, seed=4, dtype="bfloat16", name="dsm_tts.safetensors")
    (tmp_path / "c.txt").write_text("bonjour le monde hello world speak this text\n" * 30)
    spm.SentencePieceTrainer.Train(
        input=str(tmp_path / "c.txt"), model_prefix=str(folder / "tok"), vocab_size=24, minloglevel=2
    )
    return folder


@pytest.mark.parametrize("extra", [[], ["--quantize", "8", "--n-q", "3"]])
def test_local_model_folder_pytorch_layout(tmp_path, tts_folder, extra):
    out = tmp_path / "f.wav"
    rc = main(
        [
            "hello world",
            str(out),
            "--hf-repo",
            str(tts_folder),
            "--voice",
            "random",
            "--mimi-weight",
            "random",
            "--temp",
            "0",
            "--quiet",
            "--max-steps",
            "60",
        ]
        + extra
    )
    assert rc == 0
    assert sf.info(out).frames > 0 and sf.info(out).frames % 1920 == 0


def test_not_a_tts_model_is_refused(tmp_path, monkeypatch):
    from moshi_mlx.models import lm_preset
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_random_checkpoint(lm_preset("random-tiny"), tmp_path / "m", seed=1, dtype="float32")
    assert main(["hi", str(tmp_path / "o.wav"), "--hf-repo", str(tmp_path / "m"), "--voice", "random"]) == 2


def test_converted_q4_folder(tmp_path, tts_folder):
    from moshi_mlx.cli.convert import run as convert
    from moshi_mlx.weights.safetensors_io import SafetensorsFile

    out = tmp_path / "tts-q4"
    assert convert(["--hf-repo", str(tts_folder), "--out", str(out), "-q", "--quiet"]) == 0
    f = SafetensorsFile(out / "model.q4.safetensors")
    assert "transformer.layers.0.cross_attention.in_proj.scales" in f  # cross-attention quantized too
    rc = main(
        [
            "hello world",
            str(tmp_path / "q.wav"),
            "--hf-repo",
            str(out),
            "--voice",
            "random",
            "--mimi-weight",
            "random",
            "--quiet",
            "--max-steps",
            "60",
        ]
    )
    assert rc == 0 and sf.info(tmp_path / "q.wav").frames > 0


def test_sigterm_mid_run_is_one_line_and_leaves_no_output(tmp_path):
    """A stop signal ends the run through the shared CLI runner: exit 128 + 15, one line,
    no traceback, and neither the output nor its temporary file is left behind."""
    import signal
    import time

    out = tmp_path / "long.wav"
    text = " ".join(["a long sentence that keeps the demo model busy for a while"] * 40)
    p = subprocess.Popen(
        [sys.executable, "-m", "moshi_mlx.tts", text, str(out), "--max-steps", "30000"] + DEMO,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("*.partial*")) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 143, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted (SIGTERM)"
    assert list(tmp_path.iterdir()) == []


def test_disk_full_names_outfile_and_keeps_the_old_one(tmp_path):
    """A write error (here a file size limit, as a full disk) is one line naming OUTFILE, not
    an internal temporary name; the existing OUTFILE (replaced with --force) is untouched."""
    import resource

    out = tmp_path / "o.wav"
    out.write_bytes(b"an older result")
    text = " ".join(["a sentence long enough to need more than the limit"] * 4)
    r = subprocess.run(
        [sys.executable, "-m", "moshi_mlx.tts", text, str(out), "--force"] + DEMO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000)),
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"error: cannot write {out}: file too large (file size limit reached)"
    assert out.read_bytes() == b"an older result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.wav"]


def test_generation_defaults_are_the_models():
    """The flags' defaults are read from `TtsSettings` and the TTS generation constants
    (models/tts.py), as are `synthesize`'s and `StateMachine`'s: none is written twice."""
    import dataclasses
    import inspect

    from moshi_mlx.cli.tts import parser
    from moshi_mlx.models import tts as m
    from moshi_mlx.runtime.tts import synthesize

    ap = parser()
    helps = {a.dest: a.help % {"default": a.default} for a in ap._actions}
    want = {f.name: f.default for f in dataclasses.fields(m.TtsSettings) if f.name in synthesize.__kwdefaults__}
    assert set(want) == {"max_padding", "initial_padding", "final_padding", "padding_bonus", "max_steps"}
    want.update(cfg_coef=m.DEFAULT_CFG_COEF, padding_between=m.DEFAULT_PADDING_BETWEEN)
    sig = inspect.signature(synthesize).parameters
    for name, value in want.items():
        assert ap.get_default(name) == value and sig[name].default == value, name
        assert f"({value}" in helps[name] or f"; {value})" in helps[name], helps[name]
    assert ap.get_default("temp") is None and f"else {m.DEFAULT_TEMP};" in helps["temp"]
    assert sig["temp"].default == m.DEFAULT_TEMP
    machine = {f.name: f.default for f in dataclasses.fields(m.StateMachine)}
    assert machine["max_padding"] == want["max_padding"] and machine["initial_padding"] == want["initial_padding"]
    assert "80 ms each" in helps["max_steps"]


def test_a_bad_voice_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """A voice file missing, of another kind (a .pt, a recording for an embedding model), not a
    voice embedding or of the wrong width: one line, before any weight is built or read."""
    from moshi_mlx.runtime import tts as rt
    from moshi_mlx.weights.safetensors_io import save_safetensors

    import mlx.core as mx

    def no_weights(*a, **k):
        raise AssertionError("the model was loaded before the voice was checked")

    monkeypatch.setattr(rt, "random_lm", no_weights)
    monkeypatch.setattr(rt, "load_resolved", no_weights)
    sf.write(tmp_path / "me.wav", np.zeros(2400, np.float32), 24000)
    (tmp_path / "voice.pt").write_bytes(b"\x80\x02torch")
    save_safetensors(tmp_path / "other.safetensors", {"other": mx.zeros((1, 32, 20))})
    save_safetensors(tmp_path / "narrow.safetensors", {"speaker_wavs": mx.zeros((1, 16, 20))})
    (tmp_path / "folder").mkdir()
    cases = [
        ("me.wav", "is a local file, not a voice"),  # tts-tiny takes embeddings
        ("voice.pt", "not a '.pt' file"),
        ("missing.pt", "no such file, and a voice has no '.pt' suffix"),
        ("./nowhere/me.wav", "voice file not found: ./nowhere/me.wav"),
        ("other.safetensors", "is not a voice embedding"),
        ("narrow.safetensors", "this model expects [1, 32, T]"),
        ("folder", "is a folder"),
    ]
    monkeypatch.chdir(tmp_path)
    for voice, message in cases:
        assert main(["hello", str(tmp_path / "o.wav"), "--model", "tts-tiny", "--voice", voice, "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (voice, err)
        assert not (tmp_path / "o.wav").exists()


def test_a_missing_output_device_is_said_before_the_model_loads(capsys, monkeypatch):
    """To the speakers: a misspelled or missing --output-device is one error line (naming
    the output devices) before the model loads, as in moshi-local (cli/device_args.py check_devices)."""
    from moshi_mlx.cli import tts

    from ..runtime.fakes import BUILT_IN_MIC, BUILT_IN_OUTPUT, fake_devices

    fake_devices(monkeypatch, [BUILT_IN_MIC, BUILT_IN_OUTPUT], (0, 1))

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(tts, "_load", no_load)
    for spec, said in (("USB", "no output device matches 'USB'"), ("0", "output device 0 does not exist")):
        assert main(["Hello.", "--output-device", spec] + DEMO) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err.splitlines()[0] and "the model was loaded" not in err, err
