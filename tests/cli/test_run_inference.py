"""`python -m moshi_mlx.run_inference` end to end with the offline random-tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli.run_inference import main

FIXTURE = Path(__file__).parent.parent / "fixtures" / "runtime" / "run_inference_random_tiny.json"


def _sine(path, rate, seconds=2.0, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, rate)
    return seconds


@pytest.mark.parametrize("name,rate,channels", [("in.wav", 44100, 2), ("in.flac", 16000, 1), ("in.ogg", 48000, 1)])
def test_formats_rates_and_outputs(tmp_path, name, rate, channels):
    seconds = _sine(tmp_path / name, rate, channels=channels)
    out, tr, tok = tmp_path / "out.wav", tmp_path / "t.json", tmp_path / "tok.npz"
    rc = main(
        [
            str(tmp_path / name),
            str(out),
            "--model",
            "random-tiny",
            "--seed",
            "3",
            "--transcript",
            str(tr),
            "--save-tokens",
            str(tok),
            "--quiet",
        ]
    )
    assert rc == 0
    audio, sr = sf.read(out)
    n_frames = int(np.ceil(seconds * 24000 / 1920))
    assert sr == 24000 and len(audio) == n_frames * 1920
    assert np.abs(audio).max() > 0
    data = json.loads(tr.read_text())
    assert data["words"] and all(w["end"] > w["start"] for w in data["words"])
    t = np.load(tok)
    assert t["text"].shape[0] == t["audio"].shape[0] >= n_frames
    assert (t["audio"][:n_frames] >= 0).all()


def test_fixed_seed_output_is_stable(tmp_path):
    """Same seed, same input: the same tokens, run after run (and as committed)."""
    _sine(tmp_path / "in.wav", 24000, seconds=3.0)
    runs = []
    for i in range(2):
        tok = tmp_path / f"tok{i}.npz"
        assert (
            main(
                [
                    str(tmp_path / "in.wav"),
                    "--model",
                    "random-tiny",
                    "--seed",
                    "7",
                    "--temp",
                    "0.8",
                    "--temp-text",  # --temp alone sets the text's too (upstream's meaning); the fixture's is 0.7
                    "0.7",
                    "--save-tokens",
                    str(tok),
                    "--quiet",
                ]
            )
            == 0
        )
        runs.append(np.load(tok))
    np.testing.assert_array_equal(runs[0]["text"], runs[1]["text"])
    np.testing.assert_array_equal(runs[0]["audio"], runs[1]["audio"])
    expected = json.loads(FIXTURE.read_text())
    assert runs[0]["text"].tolist() == expected["text"]
    assert runs[0]["audio"].tolist() == expected["audio"]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), 24000)
    assert main([str(empty), "--model", "random-tiny", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"definitely not audio" * 10)
    assert main([str(junk), "--model", "random-tiny", "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err
    _sine(tmp_path / "ok.wav", 24000, seconds=0.5)
    assert (
        main(
            [
                str(tmp_path / "ok.wav"),
                "--moshi-weight",
                str(tmp_path / "missing.safetensors"),
                "--mimi-weight",
                str(tmp_path / "m.safetensors"),
                "--tokenizer",
                str(tmp_path / "t.model"),
                "--lm-config",
                "moshi_mlx/configs/random-tiny.json",
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "missing.safetensors" in err and len(err.strip().splitlines()) == 1


def test_module_entry_point(tmp_path):
    _sine(tmp_path / "in.wav", 24000, seconds=0.5)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "moshi_mlx.run_inference",
            str(tmp_path / "in.wav"),
            str(tmp_path / "o.wav"),
            "--model",
            "random-tiny",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "x real time" in r.stderr


class _BarThatStops:
    """tqdm's stand-in: Ctrl-C once the bar is full (while `close` waits for the last steps)."""

    def __init__(self, *a, **k):
        self.n, self.total = 0, None

    def update(self, k):
        self.n += k
        if self.total is not None and self.n >= self.total:
            raise KeyboardInterrupt

    def close(self):
        pass


@pytest.mark.parametrize("model", ["random-tiny", "random-tiny-hibiki-zero"])
def test_frames_answered_is_the_audio_written(tmp_path, capsys, monkeypatch, model):
    """'N frames answered' is the frames the written audio holds, also for Ctrl-C at the last step
    (it was one more: close() stepped own_delay frames of silence where own_delay - 1 complete the
    answer, and a model with own_delay 2 answers nothing at its first step). A whole run steps no
    frame more than its answer needs."""
    import tqdm

    seconds = _sine(tmp_path / "in.wav", 24000, seconds=1.0)
    n_in = int(np.ceil(seconds * 24000 / 1920))
    if model == "random-tiny":
        rc = main(
            [
                str(tmp_path / "in.wav"),
                str(tmp_path / "whole.wav"),
                "--model",
                model,
                "--save-tokens",
                str(tmp_path / "t.npz"),
                "--quiet",
            ]
        )
        assert rc == 0 and sf.info(str(tmp_path / "whole.wav")).frames == n_in * 1920
        assert len(np.load(tmp_path / "t.npz")["text"]) == n_in  # own_delay 1: step t answers frame t
        assert f"{n_in} frames (" in capsys.readouterr().err
    monkeypatch.setattr(tqdm, "tqdm", _BarThatStops)
    out = tmp_path / "o.wav"
    assert main([str(tmp_path / "in.wav"), str(out), "--model", model]) == 130
    err = capsys.readouterr().err
    answered = int(err.split("partial outputs saved (")[1].split(" frames answered")[0])
    assert answered > 0 and sf.info(str(out)).frames == answered * 1920, err


def _earlier_run(tmp_path):
    """A complete earlier run's outputs (what --force may replace) and the command that does."""
    _sine(tmp_path / "in.wav", 24000, seconds=1.0)
    files = {tmp_path / "o.wav": b"earlier audio", tmp_path / "t.json": b'{"text": "earlier"}'}
    files[tmp_path / "t.npz"] = b"earlier tokens"
    for p, b in files.items():
        p.write_bytes(b)
    argv = [str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--model", "random-tiny", "--quiet", "--force"]
    return files, argv + ["--transcript", str(tmp_path / "t.json"), "--save-tokens", str(tmp_path / "t.npz")]


@pytest.mark.parametrize("stop", ["ctrl-c", "disk-full"])
def test_a_run_stopped_while_writing_replaces_none_of_its_outputs(tmp_path, monkeypatch, capsys, stop):
    """Ctrl-C (or a full disk) as the outputs of a finished run are written, over an earlier run's
    (--force): every file keeps the earlier run's content, no temporary is left (the audio was
    renamed into place before the transcript was written: new audio beside the old transcript
    and tokens)."""
    from moshi_mlx.errors import OutputError
    from moshi_mlx.runtime.transcript import Transcript

    files, argv = _earlier_run(tmp_path)

    def fails(self, path):
        if stop == "ctrl-c":
            raise KeyboardInterrupt
        raise OutputError(f"cannot write {path}: no space left on device")

    monkeypatch.setattr(Transcript, "save", fails)
    assert main(argv) == (130 if stop == "ctrl-c" else 2)
    assert {p: p.read_bytes() for p in files} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "o.wav", "t.json", "t.npz"]
    capsys.readouterr()


def test_a_ctrl_c_at_the_renames_replaces_all_outputs_or_none(tmp_path, monkeypatch):
    """Ctrl-C lands as the first output is renamed into place: the other two are renamed too
    before the interrupt is raised, so the folder holds this run's three files."""
    import os
    import signal

    files, argv = _earlier_run(tmp_path)
    real = os.replace
    renames = []

    def ctrl_c_at_the_first_rename(a, b):
        if not renames:
            os.kill(os.getpid(), signal.SIGINT)
        renames.append(os.path.basename(b))
        real(a, b)

    monkeypatch.setattr(os, "replace", ctrl_c_at_the_first_rename)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job ignores SIGINT)
    try:
        assert main(argv) == 130
    finally:
        signal.signal(signal.SIGINT, inherited)
    monkeypatch.setattr(os, "replace", real)
    assert sorted(renames) == ["o.wav", "t.json", "t.npz"]
    assert all(p.read_bytes() != b for p, b in files.items())
    assert sf.info(str(tmp_path / "o.wav")).frames > 0 and "words" in json.loads((tmp_path / "t.json").read_text())
    assert len(np.load(tmp_path / "t.npz")["text"]) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "o.wav", "t.json", "t.npz"]


def test_the_progress_bar_has_its_total_from_the_start(tmp_path, capsys):
    """The bar was made before the total was known: 'inference: 0frames [00:00, ?frames/s]'
    until the model's first frames. `respond` now gives the total first (progress(0, total)),
    the bar is made with it, and a translation's total (its wait for the EOS) does not grow."""
    import moshi_mlx

    _sine(tmp_path / "in.wav", 24000, seconds=1.0)
    assert main([str(tmp_path / "in.wav"), "--model", "random-tiny"]) == 0
    renders = [r for r in capsys.readouterr().err.replace("\r", "\n").splitlines() if r.startswith("inference:")]
    assert renders and all(" 0frames" not in r and "/" in r for r in renders), renders
    assert renders[0].startswith("inference:   0%|") and "| 0/" in renders[0], renders[0]
    for name in ("random-tiny", "random-tiny-hibiki-zero"):
        calls = []
        moshi_mlx.load(name).respond(
            np.zeros(24000, np.float32), sample_rate=24000, progress=lambda *a: calls.append(a)
        )
        assert calls[0] == (0, calls[-1][1]) and {t for _, t in calls} == {calls[0][1]}, (name, calls[:2], calls[-1])


def test_temp_zero_is_greedy_for_the_text_too(tmp_path):
    """Upstream's run_inference --temp set the text's temperature too, and Kyutai's STT README
    runs `run_inference --hf-repo kyutai/stt-2.6b-en-mlx audio.mp3 --temp 0` for a greedy
    transcript; here --temp set the audio's only, so that command sampled the text at 0.7.
    Now --temp 0 is --temp 0 --temp-text 0 (a speech-to-text model too); --temp-text still
    gives the text's alone."""
    _sine(tmp_path / "in.wav", 24000, seconds=1.5)

    def tokens(model, *flags):
        tok = tmp_path / f"{model}{len(list(tmp_path.glob('*.npz')))}.npz"
        assert main([str(tmp_path / "in.wav"), "--model", model, *flags, "--quiet", "--save-tokens", str(tok)]) == 0
        return np.load(tok)

    for model in ("random-tiny", "random-tiny-stt"):
        temp0, greedy = tokens(model, "--temp", "0"), tokens(model, "--temp", "0", "--temp-text", "0")
        np.testing.assert_array_equal(temp0["text"], greedy["text"])
        np.testing.assert_array_equal(temp0["audio"], greedy["audio"])
        assert not np.array_equal(tokens(model, "--temp", "0", "--temp-text", "1")["text"], greedy["text"])
