"""`python -m moshi_mlx.local`: simulated-device runs, recording, transcript, device errors,
a device vanishing mid-session, and Ctrl-C."""

import json
import signal
import subprocess
import sys
import time
import wave

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli import local
from moshi_mlx.runtime import devices, live

from ..runtime.fakes import BUILT_IN_MIC, BUILT_IN_OUTPUT, fake_devices


def _speech_like(path, seconds=2.0, rate=16000):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32), rate)


def test_simulated_session_records_and_transcribes(tmp_path, capsys):
    _speech_like(tmp_path / "mic.flac")
    rec, tr = tmp_path / "rec.wav", tmp_path / "tr.json"
    rc = local.main(
        [
            "--model",
            "random-tiny",
            "--simulate",
            str(tmp_path / "mic.flac"),
            "--record",
            str(rec),
            "--transcript",
            str(tr),
        ]
    )
    assert rc == 0
    err = capsys.readouterr().err
    assert "steps, delay median" in err and "recording saved" in err
    with wave.open(str(rec)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 24000
        assert w.getnframes() >= 20 * 1920
    assert json.loads(tr.read_text())["words"]


def test_a_session_without_steps_says_so(tmp_path, capsys, recwarn):
    """The summary printed "delay median nan ms / max nan ms ... step median nan ms"."""
    _speech_like(tmp_path / "mic.wav", seconds=0.5)
    assert (
        local.main(
            [
                "--model",
                "random-tiny",
                "--simulate",
                str(tmp_path / "mic.wav"),
                "--duration",
                "0.3",
                "--slow-step-ms",
                "1e9",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "0 steps: the session ended before the model answered a frame" in err and "nan" not in err
    assert not [w for w in recwarn if "All-NaN" in str(w.message)]  # 6 lines of numpy warnings on stderr too


def test_list_devices_and_unknown_device(capsys, monkeypatch):
    fake_devices(monkeypatch, [BUILT_IN_MIC, BUILT_IN_OUTPUT], (0, 1))
    assert local.main(["--list-devices"]) == 0
    out = capsys.readouterr().out
    assert "Built-in Microphone" in out and "48000 Hz" in out
    rc = local.main(["--model", "random-tiny", "--input-device", "USB headset"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no input device matches 'USB headset'" in err and "Built-in Microphone" in err
    assert "Traceback" not in err


def test_devices_are_checked_before_the_model_loads(capsys, monkeypatch, tmp_path):
    """A misspelled or absent device is said at once, not after a 7B has loaded."""
    fake_devices(monkeypatch, [BUILT_IN_MIC, BUILT_IN_OUTPUT], (0, 1))

    def no_load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(local, "load_session", no_load)
    for flag, spec, said in (
        ("--input-device", "USB", "no input device matches 'USB'"),
        ("--output-device", "7", "output device 7"),
    ):
        assert local.main(["--hf-repo", str(tmp_path), flag, spec]) == 2
        err = capsys.readouterr().err
        assert said in err and "the model was loaded" not in err, err


USB_MIC = dict(BUILT_IN_MIC, name="USB Mic")
INPUTS = "the input devices are 0: Built-in Microphone (default), 2: USB Mic"


@pytest.mark.parametrize(
    "tool, argv, line",
    [
        ("local", ["--model", "random-tiny", "--input-device", "Blue"], f"no input device matches 'Blue'; {INPUTS}"),
        (
            "local",
            ["--model", "random-tiny", "--output-device", "7"],
            "output device 7 does not exist or has no output channels; the output device is 1: Built-in Output "
            "(default)",
        ),
        (
            "translate",
            ["--model", "random-tiny-hibiki-zero", "--input-device", "0x"],
            f"no input device matches '0x'; {INPUTS}",
        ),
        (
            "stt",
            ["--model", "random-tiny-stt", "--input-device", "9"],
            f"input device 9 does not exist or has no input channels; {INPUTS}",
        ),
        (
            "tts",
            ["hi", "--model", "tts-tiny", "--voice", "random", "--output-device", "USB"],
            "no output device matches 'USB'; the output device is 1: Built-in Output (default)",
        ),
    ],
    ids=["local-input", "local-output", "translate", "stt", "tts"],
)
def test_a_missing_device_is_the_last_line_in_every_tool(tool, argv, line, capsys, monkeypatch):
    """A misspelled --input-device / --output-device is one error line naming the devices of
    its kind, in every tool that opens one; the device table used to follow the error line."""
    import importlib

    fake_devices(monkeypatch, [BUILT_IN_MIC, BUILT_IN_OUTPUT, USB_MIC], (0, 1))
    assert importlib.import_module(f"moshi_mlx.cli.{tool}").main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {line}"]


def test_no_devices_at_all(capsys, monkeypatch):
    monkeypatch.setattr(devices, "_devices", lambda: [])
    monkeypatch.setattr(devices, "_sd", lambda: object())
    assert local.main(["--model", "random-tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # one line, not the error and an empty list
    assert err[-1] == "error: no input audio device found: this machine has no audio devices", err
    assert not [line for line in err if "no audio devices found" in line], err


class VanishingIO:
    """Stands in for SoundDeviceIO: plays along for 1 s, then the device disappears."""

    input_rate = output_rate = 48000

    def __init__(self, *a, **k):
        self.t0 = None

    def describe(self):
        return "fake device"

    def start(self, pipeline):
        import threading

        self.t0 = time.monotonic()
        self.stop = threading.Event()

        def feed():
            block = 3840
            while not self.stop.is_set():
                pipeline.push_input(np.random.default_rng(0).standard_normal(block).astype(np.float32) * 0.1)
                pipeline.read_output(block)
                self.stop.wait(0.08)

        threading.Thread(target=feed, daemon=True).start()

    def alive(self):
        return time.monotonic() - self.t0 < 1.0

    def close(self):
        self.stop.set()


def test_device_lost_flushes_recording(tmp_path, capsys, monkeypatch):
    fake_devices(monkeypatch, [BUILT_IN_MIC, BUILT_IN_OUTPUT], (0, 1))  # there are devices, until one vanishes
    monkeypatch.setattr(live, "SoundDeviceIO", VanishingIO)
    rec = tmp_path / "rec.wav"
    rc = local.main(["--model", "random-tiny", "--record", str(rec)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "audio device stopped or disappeared" in err and "recording saved" in err
    with wave.open(str(rec)) as w:
        assert w.getnframes() > 5 * 1920  # about a second of both sides


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_exits_cleanly_and_keeps_the_recording(tmp_path):
    _speech_like(tmp_path / "mic.wav", seconds=30.0, rate=24000)
    rec = tmp_path / "rec.wav"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "moshi_mlx.local",
            "--model",
            "random-tiny",
            "--simulate",
            str(tmp_path / "mic.wav"),
            "--record",
            str(rec),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (rec.exists() and rec.stat().st_size > 4 * 24000):
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err  # 128 + SIGINT: interrupted, cleanly
    assert "Traceback" not in err and "stopping (Ctrl-C)" in err and "recording saved" in err
    with wave.open(str(rec)) as w:
        assert w.getnframes() > 24000 // 2
