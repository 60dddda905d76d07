"""The PersonaPlex flags on the command line: the live loop (simulated sound card: echo
cancellation and lag control as for Moshi) and file inference run the demo model with a voice
file and a role; a Moshi model refuses a role in one error line (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VOICE = str(Path(__file__).resolve().parents[1] / "fixtures" / "persona" / "voice.wav")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=600)


def test_live_loop_and_file_inference_with_a_voice_and_a_role(tmp_path):
    r = _run(
        "moshi_mlx.local",
        "--model",
        "random-tiny-persona",
        "--voice",
        VOICE,
        "--persona",
        "You are a pirate.",
        "--simulate",
        VOICE,
        "--duration",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "echo cancellation" in r.stderr and "steps, delay median" in r.stderr, r.stderr
    out = tmp_path / "answer.wav"
    r = _run(
        "moshi_mlx.run_inference",
        "--model",
        "random-tiny-persona",
        "--voice",
        VOICE,
        "--persona",
        "Hi.",
        VOICE,
        str(out),
        "--quiet",
    )
    assert r.returncode == 0 and out.stat().st_size > 44, r.stderr


def test_a_moshi_model_refuses_a_persona_in_one_line(tmp_path):
    r = _run(
        "moshi_mlx.run_inference",
        "--model",
        "random-tiny",
        "--persona",
        "You are a pirate.",
        VOICE,
        str(tmp_path / "o.wav"),
        "--quiet",
    )
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --persona needs a PersonaPlex model (--hf-repo nvidia/personaplex-7b-v1); "
        "random-tiny is a dialogue model (moshi)"
    ], r.stderr
    assert "Traceback" not in r.stderr


def test_a_role_that_is_not_utf8_is_one_line(tmp_path):
    """A command line's non-UTF-8 bytes reach Python as unpaired surrogates, which SentencePiece's
    binding failed on with a C++ cast traceback (local, run-inference, web and the API alike)."""
    r = subprocess.run(
        [sys.executable, "-m", "moshi_mlx.run_inference", "--model", "random-tiny-persona", "--persona"]
        + [b"pirate \xff", VOICE, str(tmp_path / "o.wav"), "--quiet"],
        capture_output=True,
        timeout=600,
    )
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: persona is not UTF-8 text: character 8 is '\\udcff'"
    ], err
    assert not (tmp_path / "o.wav").exists()


def test_a_role_needs_the_tokenizer(tmp_path):
    """With --tokenizer none the role was written as UTF-8 byte ids (the tokenizer-less demo's
    stand-in), which a real PersonaPlex reads as unrelated SentencePiece pieces: a wrong role, silently."""
    r = _run(
        "moshi_mlx.run_inference",
        "--model",
        "random-tiny-persona",
        "--tokenizer",
        "none",
        "--persona",
        "You are a pirate.",
        VOICE,
        str(tmp_path / "o.wav"),
        "--quiet",
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        "error: a persona needs the model's text tokenizer; --tokenizer none (token ids only) has none"
    ], r.stderr
    assert not (tmp_path / "o.wav").exists()


def test_a_missing_voice_file_is_found_before_the_model_loads(tmp_path, capsys):
    """The voice is an input: a missing file was found only once the model had loaded (minutes
    for the 7B). Here the model source does not exist either: the voice is named first."""
    from moshi_mlx.cli import local, local_web, run_inference

    missing, model = str(tmp_path / "me.wav"), ["--hf-repo", str(tmp_path / "no-model")]
    for main, argv in (
        (run_inference.main, [*model, "--voice", missing, VOICE, str(tmp_path / "o.wav")]),
        (local.main, [*model, "--voice", missing, "--simulate", VOICE]),
        (local_web.main, [*model, "--voice", missing, "--port", "0"]),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: voice {missing!r}: no such file and not a preset"), err
