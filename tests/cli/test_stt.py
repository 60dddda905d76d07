"""`python -m moshi_mlx.stt`: files (any format/rate) and the simulated microphone on the demo
model, transcripts (.json/.srt/.vtt/.txt), a PyTorch-layout STT checkpoint, bad inputs."""

import json
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli import stt
from moshi_mlx.models import LmConfig
from moshi_mlx.models.config import preset
from moshi_mlx.weights.random_state import random_state

from ..runtime.fakes import BUILT_IN_MIC, fake_devices
from .model_folders import random_model_folder


def _speech(path, seconds=1.5, rate=16000, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, rate)


def _stt_folder(tmp_path, model: list[str], transcript, *more: str) -> int:
    """stt.main on tmp_path/in.wav with the LM that the `model` flags name, the published Mimi's
    architecture with random weights (`--mimi-weight random`) and no tokenizer."""
    return stt.main(
        [
            str(tmp_path / "in.wav"),
            *model,
            "--mimi-weight",
            "random",
            "--tokenizer",
            "none",
            "--transcript",
            str(transcript),
            *more,
            "--quiet",
        ]
    )


def test_file_to_json_srt_vtt(tmp_path, capsys):
    _speech(tmp_path / "in.flac", rate=44100, channels=2)
    for ext in ("json", "srt", "vtt", "txt"):
        out = tmp_path / f"t.{ext}"
        assert stt.main([str(tmp_path / "in.flac"), "--model", "random-tiny-stt", "--transcript", str(out)]) == 0
        assert out.stat().st_size > 0
    cap = capsys.readouterr()
    assert "x real time" in cap.err and "NOISE" in cap.err
    assert cap.out.startswith("[0:00.00] ") and "‹" not in cap.out  # the demo's tiny tokenizer: text
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["words"] and data["text"] == (tmp_path / "t.txt").read_text().strip()
    assert all(w["end"] > w["start"] >= 0 for w in data["words"])
    assert (tmp_path / "t.vtt").read_text().startswith("WEBVTT")
    assert (tmp_path / "t.srt").read_text().startswith("1\n00:00:")
    assert data["text_delay_seconds"] == 0.5


def test_words_mode_and_same_result_run_to_run(tmp_path, capsys):
    _speech(tmp_path / "in.wav")
    args = [str(tmp_path / "in.wav"), "--model", "random-tiny-stt", "--words", "--tokenizer", "none"]
    assert stt.main(args + ["--transcript", str(tmp_path / "a.json")]) == 0
    first = capsys.readouterr().out
    assert stt.main(args + ["--transcript", str(tmp_path / "b.json")]) == 0
    assert capsys.readouterr().out == first
    line = first.splitlines()[0].split()
    assert float(line[1]) > float(line[0]) >= 0 and line[2].startswith("‹")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


def test_simulated_microphone(tmp_path, capsys):
    _speech(tmp_path / "mic.wav", seconds=1.2, rate=48000)
    out = tmp_path / "live.json"
    assert (
        stt.main(["--model", "random-tiny-stt", "--simulate", str(tmp_path / "mic.wav"), "--transcript", str(out)]) == 0
    )
    err = capsys.readouterr().err
    assert "simulated microphone" in err and "transcript saved" in err
    words = json.loads(out.read_text())["words"]
    # the 1.2 s file plus the 0.5 s delay + 1 s tail went through: words until after the audio
    assert words and words[-1]["end"] > 1.0


def test_pytorch_layout_stt_checkpoint_with_unused_depformer_in(tmp_path, capsys):
    """Kyutai's PyTorch STT files carry `depformer_in` though the model has no depformer."""
    from moshi_mlx.weights.safetensors_io import save_safetensors

    cfg_d = preset("random-tiny-stt").to_dict()
    cfg_d.pop("_source", None)
    cfg_d["card"] = 2048  # the published Mimi's codebooks ('--mimi-weight random': its architecture)
    cfg = LmConfig.from_dict(cfg_d)
    state = random_state(cfg, 5)
    state["depformer_in.0.weight"] = np.zeros((16, cfg.dim), np.float32)
    d = tmp_path / "stt"
    d.mkdir()
    save_safetensors(d / "model.safetensors", {k: mx.array(v) for k, v in state.items()})
    (d / "config.json").write_text(json.dumps(cfg_d))
    _speech(tmp_path / "in.wav")
    out = tmp_path / "t.json"
    assert _stt_folder(tmp_path, ["--moshi-weight", str(d / "model.safetensors")], out) == 0
    assert json.loads(out.read_text())["text"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.wav"], "missing.wav"),
        (["{empty}"], "empty.wav"),
        (["{wav}", "--transcript", "out.docx"], "format"),
        (["{wav}", "--transcript", "nowhere/out.json"], "does not exist"),
        (["{wav}", "--vad-threshold", "2"], "--vad-threshold"),
        (["{wav}", "--simulate", "{wav}"], "not both"),
        ([""], "empty path"),  # it was the microphone
        (["--simulate", " "], "empty path"),
        (["{wav}", "--temp", "-1"], "temperature"),
        (["{wav}", "--model", "random-tiny"], "not a speech-to-text model"),
        (["{wav}", "--model", "random-tiny-helium"], "not a speech-to-text model (a text model: use moshi-helium)"),
        (["{wav}", "--duration", "0"], "--duration"),
        (["{wav}", "--transcript", "old.json"], "already exists"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    _speech(tmp_path / "in.wav", seconds=0.5)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)
    (tmp_path / "old.json").write_text("kept")
    args = [a.format(wav=tmp_path / "in.wav", empty=tmp_path / "empty.wav") for a in args]
    if "--model" not in args:
        args += ["--model", "random-tiny-stt"]
    assert stt.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not (tmp_path / "out.json").exists() and (tmp_path / "old.json").read_text() == "kept"


def test_unknown_input_device_is_one_line(capsys, monkeypatch):
    """A misspelled or missing --input-device is said before the model loads (a 7B: a minute),
    as moshi-local does (cli/device_args.py check_devices)."""
    fake_devices(monkeypatch, [BUILT_IN_MIC], (0, -1))

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(stt, "load_session", no_load)
    for spec, said in (("USB", "no input device matches 'USB'"), ("7", "input device 7 does not exist")):
        assert stt.main(["--model", "random-tiny-stt", "--input-device", spec]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err.splitlines()[0] and "the model was loaded" not in err, err


def test_module_entry_point(tmp_path):
    _speech(tmp_path / "in.wav", seconds=0.5)
    r = subprocess.run(
        [sys.executable, "-m", "moshi_mlx.stt", str(tmp_path / "in.wav"), "--model", "random-tiny-stt", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "real time" in r.stderr and r.stdout == ""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_finishes_the_last_words_and_saves(tmp_path, sig):
    """SIGINT while listening: the tail of silence is fed, the transcript saved, exit 130.
    SIGTERM the same (143), and the line says SIGTERM, not Ctrl-C (it did)."""
    import signal
    import time

    sig = getattr(signal, sig)

    _speech(tmp_path / "mic.wav", seconds=30.0)
    out = tmp_path / "t.json"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moshi_mlx.stt",
            "--model",
            "random-tiny-stt",
            "--simulate",
            str(tmp_path / "mic.wav"),
            "--transcript",
            str(out),
            "--words",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline and not line:
        line = p.stdout.readline()  # the first word
    p.send_signal(sig)
    rest, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err  # the shared runner: 128 + the signal, after saving
    said = "Ctrl-C" if sig == signal.SIGINT else "SIGTERM"
    assert "Traceback" not in err and f"stopping ({said}): finishing" in err and "transcript saved" in err, err
    assert err.strip().splitlines()[-1] == f"interrupted ({signal.Signals(sig).name})"
    words = json.loads(out.read_text())["words"]
    assert words and len(words) == len((line + rest).strip().splitlines()) - (line + rest).count("end of turn")


def test_quantized_stt_folder(tmp_path, capsys):
    """A speech-to-text model converted to q4 by moshi_mlx.convert runs as a folder."""
    from moshi_mlx.cli import convert

    src = random_model_folder(tmp_path / "stt", "random-tiny-stt")
    assert convert.run([str(src), "--out", str(tmp_path / "q4"), "-q", "--q-bits", "4"]) == 0
    _speech(tmp_path / "in.wav")
    out = tmp_path / "t.json"
    assert _stt_folder(tmp_path, ["--hf-repo", str(tmp_path / "q4")], out) == 0
    assert json.loads(out.read_text())["words"]
    # the transcript never goes over a file of the model folder (it did with --force)
    cfg_file = tmp_path / "q4" / "config.json"
    before = cfg_file.read_bytes()
    assert _stt_folder(tmp_path, ["--hf-repo", str(tmp_path / "q4")], cfg_file, "--force") == 2
    assert "--hf-repo and --transcript are the same file" in capsys.readouterr().err
    assert cfg_file.read_bytes() == before


def test_a_dialogue_model_is_refused_before_its_weights_are_read(tmp_path, capsys, monkeypatch):
    """Moshi (a dialogue model) given to moshi-stt: one line from its config, saying what to run it
    with, and no weights read (a 7B model takes minutes to load). Both the demo model (built in
    memory) and a model folder."""
    from moshi_mlx.runtime import loading
    from moshi_mlx.weights import lm_loader
    from moshi_mlx.weights.safetensors_io import save_safetensors

    def no_weights(*a, **k):
        raise AssertionError("the weights were read before the model was refused")

    monkeypatch.setattr(loading, "_demo", no_weights)
    monkeypatch.setattr(lm_loader, "load_resolved", no_weights)
    _speech(tmp_path / "in.wav", seconds=0.3)
    cfg_d = preset("random-tiny").to_dict()
    cfg_d.pop("_source", None)
    d = tmp_path / "moshi"
    d.mkdir()
    state = random_state(LmConfig.from_dict(cfg_d), 5)
    save_safetensors(d / "model.safetensors", {k: mx.array(v) for k, v in state.items()})
    (d / "config.json").write_text(json.dumps(cfg_d))
    for model in (["--model", "random-tiny"], ["--hf-repo", str(d), "--mimi-weight", "random"]):
        assert stt.main([str(tmp_path / "in.wav"), *model]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "not a speech-to-text model" in err[0], err
        assert "moshi-local" in err[0] and "kyutai/stt-" in err[0]
