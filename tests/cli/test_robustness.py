"""Issue 11, proven end to end: every CLI, driven as a subprocess, over bad values, bad and
clashing output paths, signals mid-run, a full disk and each other's files. Each case checks
the exit code, that no traceback (nor SIGABRT) came out, that files which existed before a
failure are byte-identical after it, and that outputs are complete or absent.

Cheap cases (refused before any work) run many to a subprocess through a small driver; cases
that need a model running (signals, disk full, interop) get their own. All offline: the
random-tiny demo model and `--mimi-weight random`.
"""

from __future__ import annotations

import json
import re
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

P = sys.executable
DEMO = ["--model", "random-tiny"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and resource limits")


def _tone(path: Path, seconds: float, rate: int = 24000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32), rate)
    return path


def _clean(rc: int, err: str, expected: int) -> None:
    assert "Traceback" not in err, err
    assert "terminate called" not in err and rc != -signal.SIGABRT, err
    assert rc == expected, f"exit {rc}, expected {expected}: {err}"


def _no_partials(folder: Path) -> None:
    left = [p.name for p in folder.iterdir() if p.name.endswith(".partial")]
    assert not left, f"temporary files left behind: {left}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("robust")
    _tone(d / "in.wav", 1.0)
    (d / "keep.wav").write_bytes((d / "in.wav").read_bytes())
    (d / "keep.json").write_text('{"precious": true}')
    (d / "a_folder").mkdir()
    np.save(d / "bad_codes.npy", np.full((1, 8, 4), 99999, np.int32))
    bad = json.loads((Path(__file__).parents[2] / "moshi_mlx" / "configs" / "random-tiny.json").read_text())
    for name, key, value in [
        ("dim_str", "dim", "64"),
        ("hidden_null", "hidden_scale", None),
        ("heads0", "num_heads", 0),
        ("pad_out", "existing_text_padding_id", 5000),
    ]:
        (d / f"{name}.json").write_text(json.dumps({**bad, key: value}))
    return d


# ---- refused before any work: many cases per subprocess ----------------------------------

_DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, traceback
    from moshi_mlx.cli import convert, local, mimi, quality, run_inference
    mains = {"local": local.main, "run_inference": run_inference.main, "mimi": mimi.main,
             "convert": convert.main, "quality": quality.main}
    results = []
    for name, argv in json.loads(sys.stdin.read()):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = mains[name](argv)
            except BaseException:
                rc = None
                traceback.print_exc()
        results.append([rc, err.getvalue()])
    print(json.dumps(results))
""")


def _bad_config(name: str, message: str) -> tuple[str, list[str], str]:
    """A REFUSED case: run_inference with the work folder's config `name`.json (see `work`)."""
    return (
        "run_inference",
        ["{d}/in.wav", "--lm-config", f"{{d}}/{name}.json", "--moshi-weight", "{d}/none.safetensors"],
        message,
    )


# (cli, argv with {d} = the work folder, expected exit code, fragment of the one error line)
REFUSED = [
    # values
    ("local", ["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    ("local", ["--seed", str(2**64)], "--seed must be in [0, 2**32)"),
    ("local", ["--temp", "nan"], "--temp must be a finite number"),
    ("local", ["--max-lag-ms", "0"], "--max-lag-ms must be > 0"),
    ("local", ["--max-lag-ms", "-100"], "--max-lag-ms must be > 0"),
    ("local", ["--duration", "0"], "--duration must be > 0"),
    ("local", ["--slow-step-ms", "inf"], "--slow-step-ms must be a finite number"),
    ("run_inference", ["{d}/in.wav", "--seed", "-1"], "--seed must be in [0, 2**32)"),
    ("run_inference", ["{d}/in.wav", "--seed", "18446744073709551616"], "--seed must be in [0, 2**32)"),
    ("run_inference", ["{d}/in.wav", "--temp", "nan"], "--temp must be a finite number"),
    ("run_inference", ["{d}/in.wav", "--top-p", "2"], "--top-p must be in [0, 1]"),
    ("run_inference", ["{d}/in.wav", "--top-k", "-3"], "--top-k must be >= 0"),
    ("mimi", ["roundtrip", "{d}/in.wav", "{d}/o.wav", "-n", "0"], "--n-q must be >= 1"),
    ("mimi", ["encode", "{d}/in.wav", "{d}/c.npy", "--seed", "-1"], "--seed must be in [0, 2**32)"),
    ("convert", ["--model", "random-tiny", "--out", "{d}/cv", "--seed", "-1"], "--seed must be in [0, 2**32)"),
    ("convert", ["--model", "random-tiny", "--out", "{d}/cv", "-q", "--q-bits", "four"], "--q-bits must be an integer"),
    ("quality", ["{d}/a_folder", "{d}/a_folder", "--frames", "0"], "--frames must be >= 1"),
    # config.json values
    _bad_config("dim_str", 'dim must be an integer, got "64"'),
    _bad_config("hidden_null", "hidden_scale must be a number, got null"),
    _bad_config("heads0", "num_heads must be >= 1, got 0"),
    _bad_config("pad_out", "existing_text_padding_id 5000 is outside the text vocabulary"),
    # output paths, before any work
    ("local", DEMO + ["--record", "{d}/nodir/x.wav"], "folder {d}/nodir does not exist"),
    ("local", DEMO + ["--transcript", "{d}/nodir/t.json"], "folder {d}/nodir does not exist"),
    ("local", DEMO + ["--record", "{d}/a_folder"], "is a folder"),
    ("local", DEMO + ["--record", "{d}/out.wav", "--transcript", "{d}/out.wav"], "are the same file"),
    ("local", DEMO + ["--record", "{d}/keep.wav"], "already exists; use --force"),
    ("local", DEMO + ["--transcript", "{d}/keep.json"], "already exists; use --force"),
    ("local", DEMO + ["--record", "{d}/r.mp3"], "expected .wav"),
    ("local", DEMO + ["--simulate", "{d}/keep.wav", "--record", "{d}/keep.wav", "--force"], "are the same file"),
    ("run_inference", ["{d}/in.wav", "{d}/o.wav", "--transcript", "{d}/o.wav"] + DEMO, "are the same file"),
    ("run_inference", ["{d}/keep.wav", "{d}/keep.wav"] + DEMO, "are the same file"),
    (
        "run_inference",
        ["{d}/in.wav", "--save-tokens", "{d}/t.json", "--transcript", "{d}/t.json"] + DEMO,
        "are the same file",
    ),
    ("run_inference", ["{d}/in.wav", "{d}/nodir/o.wav"] + DEMO, "folder {d}/nodir does not exist"),
    ("run_inference", ["{d}/in.wav", "--save-tokens", "{d}/nodir/t.npz"] + DEMO, "folder {d}/nodir does not exist"),
    ("run_inference", ["{d}/in.wav", "--save-tokens", "{d}/x.npy"] + DEMO, "expected .npz"),
    ("run_inference", ["{d}/in.wav", "{d}/a_folder"] + DEMO, "is a folder"),
    ("mimi", ["roundtrip", "{d}/keep.wav", "{d}/keep.wav", "--mimi-weight", "random"], "are the same file"),
    (
        "mimi",
        ["decode", "{d}/bad_codes.npy", "{d}/keep.wav", "--mimi-weight", "random", "--force"],
        "codes must be in [0, 2048)",
    ),
    ("mimi", ["roundtrip", "{d}/in.wav", "{d}/keep.wav", "--mimi-weight", "random"], "already exists; use --force"),
    ("run_inference", ["{d}/in.wav", "{d}/keep.wav"] + DEMO, "already exists; use --force"),
    ("mimi", ["encode", "{d}/in.wav", "{d}/nodir/c.npy", "--mimi-weight", "random"], "folder {d}/nodir does not exist"),
    ("mimi", ["encode", "{d}/in.wav", "{d}/c.npz", "--mimi-weight", "random"], "expected .npy"),
    ("mimi", ["encode", "{d}/in.wav", "{d}/a_folder", "--mimi-weight", "random"], "is a folder"),
    ("convert", ["--model", "random-tiny", "--out", "{d}/keep.json"], "exists and is not a folder"),
    ("quality", ["{d}/a_folder", "{d}/a_folder", "--json", "{d}/nodir/r.json"], "folder {d}/nodir does not exist"),
]


def test_refused_before_any_work(work):
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    cases = [(cli, [a.format(d=work) for a in argv]) for cli, argv, _ in REFUSED]
    r = subprocess.run([P, "-c", _DRIVER], input=json.dumps(cases), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])
    failures = []
    for (cli, argv, fragment), (rc, err) in zip(REFUSED, results):
        fragment = fragment.format(d=work)
        lines = [ln for ln in err.splitlines() if ln.startswith("error") or "error:" in ln]
        if rc != 2 or "Traceback" in err or "usage:" in err or fragment not in err or len(lines) != 1:
            failures.append(f"{cli} {' '.join(argv)} -> {rc}: {err.strip()[-400:]}")
    assert not failures, "\n".join(failures)
    after = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    assert after == before, "a refused command changed or created files"


# ---- signals mid-run ------------------------------------------------------------------------


class _Proc:
    """A CLI subprocess whose stderr is read as it comes (to send a signal mid-run)."""

    def __init__(self, args: list[str], **kw):
        self.p = subprocess.Popen([P, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
        self.err: list[str] = []
        self._t = threading.Thread(target=lambda: self.err.extend(iter(self.p.stderr.readline, "")), daemon=True)
        self._t.start()

    def wait_for(self, cond, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond() and time.monotonic() < deadline and self.p.poll() is None:
            time.sleep(0.1)
        assert cond(), "".join(self.err)

    def finish(self, timeout: float = 90.0) -> tuple[int, str]:
        self.p.stdout.read()
        rc = self.p.wait(timeout)
        self._t.join(5)
        return rc, "".join(self.err)


def _local_session(tmp_path: Path, seconds: float) -> tuple[list[str], Path, Path]:
    """moshi_mlx.local on the demo model, fed a `seconds` tone, recording and transcribing:
    (its argv after `python -m`, the recording, the transcript)."""
    _tone(tmp_path / "mic.wav", seconds)
    rec, tr = tmp_path / "r.wav", tmp_path / "r.json"
    argv = [
        "moshi_mlx.local",
        *DEMO,
        "--simulate",
        str(tmp_path / "mic.wav"),
        "--record",
        str(rec),
        "--transcript",
        str(tr),
    ]
    return argv, rec, tr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_local_signal_keeps_recording_and_transcript(tmp_path, sig):
    argv, rec, tr = _local_session(tmp_path, 30.0)
    proc = _Proc(argv)
    proc.wait_for(lambda: rec.exists() and rec.stat().st_size > 2 * 96_000)  # ~2 s recorded
    proc.p.send_signal(sig)
    rc, err = proc.finish()
    _clean(rc, err, 128 + sig)
    assert f"interrupted ({signal.Signals(sig).name})" in err and "recording saved" in err and "transcript saved" in err
    with wave.open(str(rec)) as w:
        assert w.getnchannels() == 2 and w.getnframes() >= 24000
    assert "words" in json.loads(tr.read_text())
    _no_partials(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_inference_signal_stops_workers_and_saves_partial_outputs(tmp_path, sig):
    _tone(tmp_path / "long.wav", 300.0)
    out, tr, tok = tmp_path / "o.wav", tmp_path / "t.json", tmp_path / "t.npz"
    earlier = sig == signal.SIGTERM  # a complete transcript from an earlier run is not replaced by a partial one
    if earlier:
        tr.write_text('{"text": "an earlier, complete run"}')
    proc = _Proc(
        [
            "moshi_mlx.run_inference",
            str(tmp_path / "long.wav"),
            str(out),
            *DEMO,
            "--transcript",
            str(tr),
            "--save-tokens",
            str(tok),
            *(["--force"] if earlier else []),
        ]
    )
    # frames are being answered (the progress bar's '\r' lines, read as lines): a fixed sleep after
    # loading could land before the first frame on a loaded machine (nothing to save yet)
    proc.wait_for(lambda: any(re.search(r"\| *[1-9][0-9]*/[0-9]+", line) for line in proc.err))
    time.sleep(1.0)  # the 300 s file takes far longer than this
    proc.p.send_signal(sig)
    rc, err = proc.finish()
    _clean(rc, err, 128 + sig)
    assert "partial outputs saved" in err
    audio, sr = sf.read(out)
    assert sr == 24000 and 0 < len(audio) < 300 * 24000
    if earlier:
        assert tr.read_text() == '{"text": "an earlier, complete run"}' and f"left as they were: {tr}" in err
    else:
        assert "words" in json.loads(tr.read_text())
    answered = np.load(tok)["audio"]
    assert len(answered) > 0
    # the audio of every frame answered (each step with audio tokens): the decoder lags the LM, and the
    # frames it had not reached were once dropped (the WAV held 4-10 frames of 33-162 answered)
    assert len(audio) == int((answered[:, 0] >= 0).sum()) * 1920, (len(audio) / 1920, len(answered))
    _no_partials(tmp_path)


def test_mimi_signal_leaves_existing_output_intact(tmp_path):
    _tone(tmp_path / "long.wav", 60.0)
    out = tmp_path / "o.wav"
    out.write_bytes(b"an older result, to be kept")
    proc = _Proc(
        ["moshi_mlx.mimi", "roundtrip", str(tmp_path / "long.wav"), str(out), "--mimi-weight", "random", "--force"]
    )
    partial = lambda: [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and p.stat().st_size > 44]  # noqa: E731
    proc.wait_for(lambda: bool(partial()))  # the new output is being written under its temporary name
    proc.p.send_signal(signal.SIGINT)
    rc, err = proc.finish()
    _clean(rc, err, 130)
    assert out.read_bytes() == b"an older result, to be kept"
    _no_partials(tmp_path)


# ---- disk full (a file size limit: EFBIG, as ENOSPC would) ----------------------------------


def _limit(nbytes: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))


def test_local_disk_full_stops_cleanly_and_saves_transcript(tmp_path):
    argv, rec, tr = _local_session(tmp_path, 20.0)
    r = subprocess.run(
        [P, "-m", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit(200_000),
    )
    _clean(r.returncode, r.stderr, 2)
    assert "error: cannot write" in r.stderr and "file too large" in r.stderr
    with wave.open(str(rec)) as w:  # valid, holding what fitted
        assert w.getnframes() > 0 and 44 + 4 * w.getnframes() <= 200_000
    assert "words" in json.loads(tr.read_text())


@pytest.mark.parametrize("cli", ["mimi", "run_inference"])
def test_batch_disk_full_keeps_old_output(tmp_path, cli):
    _tone(tmp_path / "in.wav", 4.0)
    out = tmp_path / "o.wav"
    out.write_bytes(b"old")
    args = (
        ["moshi_mlx.mimi", "roundtrip", str(tmp_path / "in.wav"), str(out), "--mimi-weight", "random", "--force"]
        if cli == "mimi"
        else ["moshi_mlx.run_inference", str(tmp_path / "in.wav"), str(out), *DEMO, "--force"]
    )
    r = subprocess.run([P, "-m", *args], capture_output=True, text=True, timeout=120, preexec_fn=_limit(50_000))
    _clean(r.returncode, r.stderr, 2)
    assert "file too large" in r.stderr and len([ln for ln in r.stderr.splitlines() if "error:" in ln]) == 1
    assert out.read_bytes() == b"old"
    _no_partials(tmp_path)


# ---- our own files interoperate; odd audio is repaired -------------------------------------


def test_tokens_npz_is_read_by_mimi_quality_and_convert(tmp_path):
    x = np.sin(np.arange(24000 * 2) / 9).astype(np.float32) * 0.3
    x[100:110] = np.nan  # repaired with a warning, not silently encoded as silence
    sf.write(tmp_path / "nan.wav", x, 24000, subtype="FLOAT")
    tok, tr = tmp_path / "t.npz", tmp_path / "t.json"
    r = subprocess.run(
        [
            P,
            "-m",
            "moshi_mlx.run_inference",
            str(tmp_path / "nan.wav"),
            str(tmp_path / "o.wav"),
            *DEMO,
            "--save-tokens",
            str(tok),
            "--transcript",
            str(tr),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _clean(r.returncode, r.stderr, 0)
    assert "10 NaN/infinite samples replaced by silence" in r.stderr
    assert tok.exists() and not (tmp_path / "t.npz.npz").exists()
    r = subprocess.run(
        [P, "-m", "moshi_mlx.mimi", "decode", str(tok), str(tmp_path / "d.wav"), "--mimi-weight", "random", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _clean(r.returncode, r.stderr, 0)
    assert sf.info(str(tmp_path / "d.wav")).frames > 0
    ref = tmp_path / "ref"
    r = subprocess.run(
        [P, "-m", "moshi_mlx.convert", *DEMO, "--out", str(ref), "--weights-dtype", "float32", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _clean(r.returncode, r.stderr, 0)
    r = subprocess.run(
        [P, "-m", "moshi_mlx.quality", str(ref), str(ref), "--codes", str(tok)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _clean(r.returncode, r.stderr, 0)
    assert f"codes {tok}" in r.stdout and "100.0%" in r.stdout  # a model agrees with itself
    r = subprocess.run(
        [
            P,
            "-m",
            "moshi_mlx.convert",
            str(ref),
            "--out",
            str(tmp_path / "q8"),
            "-q",
            "--q-bits",
            "8",
            "--eval",
            "--eval-codes",
            str(tok),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _clean(r.returncode, r.stderr, 0)
    assert f"codes {tok}" in r.stdout
