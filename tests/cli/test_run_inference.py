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
