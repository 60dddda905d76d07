"""The shared safety modules on their own: value checks (`validation`), output checks and
staged writes (`outputs`), the one WAV writer under a file size limit (`audio.wav`), the token
files (`tokens`) and the CLI runner (`cli.runner`). The CLIs built on them are driven end to
end in tests/cli/test_robustness.py."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from moshi_mlx import validation as V
from moshi_mlx.audio.io import AudioWriter, write_audio
from moshi_mlx.audio.wav import WavWriter
from moshi_mlx.errors import AudioError, OutputError, UsageError
from moshi_mlx.outputs import Output, Staged, check_output, check_outputs, write_staged, write_text
from moshi_mlx.tokens import aligned_codes, read_mimi_codes, read_stream_codes, save_tokens


# ---- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value,ok",
    [
        (0, True),
        (2**32 - 1, True),
        (-1, False),
        (2**32, False),
        (2**64, False),
        (1.5, False),
        (True, False),
        ("3", False),
        (np.int64(7), True),
    ],
)
def test_seed_range_and_type(value, ok):
    if ok:
        assert V.seed("seed", value) == int(value)
    else:
        with pytest.raises(UsageError, match="^seed must be"):
            V.seed("seed", value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "0.5", None, True])
def test_reals_refuse_nan_inf_and_non_numbers(value):
    with pytest.raises(UsageError, match="^--temp must be a"):
        V.temperature("--temp", value)


def test_ranges_name_the_value():
    assert V.top_p("top_p", 1) == 1.0 and V.temperature("t", 0) == 0.0
    with pytest.raises(UsageError, match=r"top_p must be in \[0, 1\], got 1.5"):
        V.top_p("top_p", 1.5)
    with pytest.raises(UsageError, match="lag must be > 0, got 0"):
        V.positive_or_off("lag", 0)
    assert V.positive_or_off("lag", None) is None


def test_argparse_types_give_one_line_and_accept_off():
    ap = argparse.ArgumentParser(prog="x", exit_on_error=False)
    ap.add_argument("--lag", type=V.positive_or_off_arg("--lag"), default=400.0)
    ap.add_argument("--seed", type=V.seed_arg())
    assert ap.parse_args(["--lag", "off"]).lag is None and ap.parse_args(["--lag", "12.5"]).lag == 12.5
    for argv, msg in [
        (["--lag", "0"], "--lag must be > 0, got 0"),
        (["--lag", "nan"], "--lag must be a finite number"),
        (["--seed", "-1"], r"--seed must be in \[0, 2\*\*32\), got -1"),
        (["--seed", "1e3"], "--seed must be an integer, got '1e3'"),
    ]:
        with pytest.raises(argparse.ArgumentError, match=msg):
            ap.parse_args(argv)


def test_float_pcm_scales_integers_and_refuses_nan():
    x = np.array([0, 16384, -32768, 32767], np.int16)
    np.testing.assert_allclose(V.float_pcm("pcm", x), [0.0, 0.5, -1.0, 32767 / 32768])
    assert V.float_pcm("pcm", np.array([2**30], np.int32))[0] == pytest.approx(0.5)
    assert V.float_pcm("pcm", np.array([128, 0], np.uint8)).tolist() == [0.0, -1.0]
    with pytest.raises(AudioError, match="2 of 3 samples are NaN or infinite"):
        V.float_pcm("pcm", np.array([np.nan, 0.1, np.inf], np.float32))
    notes = []
    fixed = V.float_pcm("pcm", np.array([np.nan, 0.25], np.float32), repair=True, warn=notes.append)
    assert fixed.tolist() == [0.0, 0.25] and "1 NaN/infinite samples replaced" in notes[0]
    with pytest.raises(AudioError, match="not PCM"):
        V.float_pcm("pcm", np.array([1], np.int64))


def test_mimi_takes_int16_as_pcm_and_refuses_nan():
    import mlx.core as mx

    from moshi_mlx.models import random_mimi

    m = random_mimi(0, num_codebooks=8)
    x = (0.3 * np.sin(np.arange(3840) / 7)).astype(np.float32)
    as_int16 = np.round(x * 32768).astype(np.int16)
    np.testing.assert_array_equal(np.array(m.encode(as_int16[None, None])), np.array(m.encode(x[None, None])))
    for bad in (np.full((1, 1, 1920), np.nan, np.float32), mx.array(np.full((1, 1, 1920), np.inf, np.float32))):
        with pytest.raises(AudioError, match="NaN or infinite"):
            m.encode(bad)


# ---- outputs ---------------------------------------------------------------------------------


def test_check_output_rules(tmp_path):
    (tmp_path / "old.wav").write_bytes(b"old")
    assert check_output(Output("--out", tmp_path / "new.wav", (".wav",))) == tmp_path / "new.wav"
    assert check_output(Output("--out", None)) is None
    cases = [
        (Output("--out", tmp_path / "nodir" / "x.wav"), "folder .*nodir does not exist"),
        (Output("--out", tmp_path), "is a folder"),
        (Output("--out", tmp_path / "x.mp4", (".wav", ".flac")), r"has '.mp4'; expected .wav, .flac"),
        (Output("--out", tmp_path / "x", (".npz",)), "has no extension; expected .npz"),
        (Output("--out", tmp_path / "old.wav", (".wav",), overwrite=False), "already exists; use --force"),
        (Output("--out", "/dev/null"), "not a regular file"),
        (Output("--out", ""), "empty path"),
    ]
    for out, msg in cases:
        with pytest.raises(OutputError, match=msg):
            check_output(out)
    assert (tmp_path / "old.wav").read_bytes() == b"old"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(OutputError, match="is not writable"):
        check_output(Output("--out", ro / "x.wav"))


def test_same_path_in_two_roles(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"x")
    with pytest.raises(OutputError, match="INPUT and OUTPUT are the same file"):
        check_outputs([Output("OUTPUT", a)], [("INPUT", a)])
    with pytest.raises(OutputError, match="INPUT and OUTPUT are the same file"):  # another spelling of it
        check_outputs([Output("OUTPUT", tmp_path / "." / "a.wav")], [("INPUT", str(a))])
    with pytest.raises(OutputError, match="--record and --transcript are the same file"):
        check_outputs([Output("--record", tmp_path / "n.wav"), Output("--transcript", tmp_path / "n.wav")])
    check_outputs(
        [Output("--record", tmp_path / "n.wav"), Output("--transcript", tmp_path / "n.json")],
        [("--mimi-weight", "random"), ("--moshi-weight", None)],
    )


def test_staged_write_keeps_the_old_file_until_complete(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with write_staged(p, "w") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.json"]
    write_text(p, "new")
    assert p.read_text() == "new" and sorted(os.listdir(tmp_path)) == ["out.json"]
    s = Staged(tmp_path / "other.bin")
    assert s.temp.parent == tmp_path and s.temp.name.startswith(".other.bin.") and s.temp.name.endswith(".partial")
    s.discard()
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


@pytest.mark.parametrize("writer", ["write_text", "save_transcript"])
def test_a_ctrl_c_at_the_rename_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, writer):
    """The signal lands in the commit (at the rename): the old file is whole and no
    `.NAME.XXXX.partial` is left behind (Staged.commit discarded only on OSError; moshi-stt's
    transcript writer had its own copy, `.t.json.partial`, left the same way)."""
    from moshi_mlx.runtime.subtitles import save_transcript

    p = tmp_path / "t.json"
    p.write_text("old")

    def ctrl_c(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        if writer == "write_text":
            write_text(p, "new")
        else:
            save_transcript(p, {"text": "new"}, [], force=True)
    assert p.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["t.json"]


def test_audio_writer_is_staged(tmp_path):
    p = tmp_path / "a.flac"
    with pytest.raises(KeyError):
        with AudioWriter(p) as w:
            w.write(np.zeros(100))
            raise KeyError
    assert not p.exists() and os.listdir(tmp_path) == []
    write_audio(p, np.zeros(100))
    write_audio(tmp_path / "s.wav", np.zeros((50, 2)), channels=2)
    with wave.open(str(tmp_path / "s.wav")) as w:
        assert w.getnchannels() == 2 and w.getnframes() == 50
    assert sorted(os.listdir(tmp_path)) == ["a.flac", "s.wav"]


# ---- the one WAV writer under a file size limit ------------------------------------------------

_FULL_DISK = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from moshi_mlx.audio.wav import WavWriter
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
    w = WavWriter(sys.argv[1], 24000, 2)
    try:
        for _ in range(100):
            w.write(np.full((333, 2), 0.5, np.float32))
    except Exception as e:
        print(type(e).__name__, e)
    w.close()
""")


def test_wav_writer_stays_valid_when_the_disk_fills(tmp_path):
    p = tmp_path / "r.wav"
    r = subprocess.run([sys.executable, "-c", _FULL_DISK, str(p)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("OutputError cannot write") and "file too large" in r.stdout
    with wave.open(str(p)) as w:
        assert w.getnchannels() == 2 and w.getnframes() == 7 * 333  # the whole blocks that fitted
        assert os.path.getsize(p) == 44 + 4 * w.getnframes()
        assert np.all(np.frombuffer(w.readframes(w.getnframes()), "<i2") == 16384)


def test_wav_writer_header_after_every_block(tmp_path):
    w = WavWriter(tmp_path / "x.wav", 24000, 1)
    for n in (10, 0, 7):
        w.write(np.ones(n, np.float32) * 0.1)
        with wave.open(str(tmp_path / "x.wav")) as r:
            assert r.getnframes() == w.frames
    w.write(np.array([np.nan, 2.0, -2.0], np.float32))  # NaN -> 0, clipped
    w.close()
    with wave.open(str(tmp_path / "x.wav")) as r:
        assert np.frombuffer(r.readframes(20), "<i2")[-3:].tolist() == [0, 32767, -32767]


# ---- token files ----------------------------------------------------------------------------


def test_tokens_npz_round_trip(tmp_path):
    # own delay D = 2: step t returns the text of frame t+1 and the model's audio frame t-1
    text, user = [11, 12, 13, 14], [[1, 2], [3, 4], [5, 6], [7, 8]]
    audio = [None, [20, 21], [22, 23], [24, 25]]
    p = tmp_path / "t.npz"
    save_tokens(
        p,
        text=text,
        audio=audio,
        user=user,
        frames=[0, 1, 2, 3],
        prefix_text=10,
        prefix_audio=None,
        dep_q=2,
        own_delay=2,
    )
    assert os.listdir(tmp_path) == ["t.npz"]
    codes = read_stream_codes(p)
    assert codes.tolist() == [[[10, 11, 12], [20, 22, 24], [21, 23, 25], [1, 3, 5], [2, 4, 6]]]
    assert read_mimi_codes(p).tolist() == [[[20, 22, 24], [21, 23, 25]]]
    with pytest.raises(AudioError, match="tokens are saved as .npz"):
        save_tokens(
            tmp_path / "t.npy",
            text=text,
            audio=audio,
            user=user,
            frames=[],
            prefix_text=1,
            prefix_audio=None,
            dep_q=2,
            own_delay=1,
        )
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(AudioError, match="has no 'codes' array"):
        read_stream_codes(tmp_path / "other.npz")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(AudioError, match="cannot read"):
        read_mimi_codes(tmp_path / "junk.npy")
    # a WAV given as codes: numpy tried it as a pickle ("This file contains pickled (object) data...")
    (tmp_path / "a.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40))
    with pytest.raises(AudioError, match=r"a\.wav as a \.npy/\.npz codes file: it has no NumPy or zip header$"):
        read_stream_codes(tmp_path / "a.wav")
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(AudioError, match="empty.npy is empty"):
        read_mimi_codes(tmp_path / "empty.npy")


def _signal_at(n: int, body) -> tuple[int, bool]:
    """Run `body` as a tool (runner.run_cli, in this process) with a SIGTERM delivered at its
    n-th call, return or C-call return: where CPython runs a Python signal handler (on
    entering a function, after a C function such as os.open returned; a return stands for the
    caller's next one, the value not yet stored). Not at a generator's yield: an error raised
    there by a profiler ends the generator without its `finally`, which no signal does. The
    exit code, and whether the signal was sent (n within the run)."""
    import contextlib
    import inspect
    import io

    from moshi_mlx.cli import runner

    seen = [0]

    def profile(frame, event, arg):
        if event in ("call", "c_return") or (event == "return" and not frame.f_code.co_flags & inspect.CO_GENERATOR):
            seen[0] += 1
            if seen[0] == n:
                signal.raise_signal(signal.SIGTERM)  # the runner's handler raises here

    def tool(argv):
        sys.setprofile(profile)
        try:
            body()
        finally:
            sys.setprofile(None)

    with contextlib.redirect_stderr(io.StringIO()):
        code = runner.run_cli(tool, [])
    return code, seen[0] >= n


def test_a_stop_signal_anywhere_in_a_runs_writes_leaves_no_temporary_file(tmp_path):
    """moshi-tts's writes (an AudioWriter and a transcript, renamed together by a StagedGroup),
    with SIGTERM delivered at each point of them in turn: the folder holds both new files or
    neither, never a `.NAME.XXXX.partial`, and the exit code is 143. A signal between a
    temporary file's creation and the line that would discard it (inside mkstemp, in Staged()
    before it returned, at `with AudioWriter(...)` before __enter__, between the group's block
    and its commit) left that file: tests/cli/test_tts.py's SIGTERM test, sending the signal
    as soon as the temporary file appears, found one there under load. One as a group began
    to collect left it collecting: every later write of the process was only marked ready."""
    from moshi_mlx.outputs import StagedGroup, unfinished

    def tts_writes():
        group = StagedGroup()
        with group.collect():
            with AudioWriter(tmp_path / "o.wav", 24000) as w:
                w.write(np.zeros(1920, np.float32))
            write_text(tmp_path / "t.json", "{}")
        group.commit()

    tts_writes()  # once without a signal: the imports a signal could break are done
    n, bad, sent = 0, [], True
    while sent:
        for p in tmp_path.iterdir():
            p.unlink()
        n += 1
        code, sent = _signal_at(n, tts_writes)
        names = sorted(p.name for p in tmp_path.iterdir())
        if sent and (code != 143 or names not in ([], ["o.wav", "t.json"])):
            bad.append((n, code, names))
    for p in tmp_path.iterdir():
        p.unlink()
    assert n > 300 and bad == [] and not unfinished(), bad[:5]
    write_text(tmp_path / "after.json", "{}")  # no group is left collecting this process's writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["after.json"]


@pytest.mark.parametrize("block", ["offline_mode", "signals_held", "StagedGroup.collect"])
def test_a_stop_signal_entering_or_leaving_a_block_leaves_no_state_behind(block):
    """The package's blocks that set process state (offline mode, held signal handlers, the
    group collecting writes), with SIGTERM (the runner's handler) delivered at each of their
    steps in turn: the state is what it was before. Set before the `try` that restores it, a
    signal just after the setting left it set for the rest of the process (a Python session
    kept offline; SIGINT's handler left holding, so Ctrl-C did nothing anymore)."""
    import inspect

    from moshi_mlx import outputs
    from moshi_mlx.cli import early
    from moshi_mlx.errors import STOP_SIGNALS
    from moshi_mlx.weights import hub

    make = {
        "offline_mode": lambda: hub.offline_mode(True),
        "signals_held": outputs.signals_held,
        "StagedGroup.collect": lambda: outputs.StagedGroup().collect(),
    }[block]

    def state():
        return hub._OFFLINE.get(), outputs._GROUP.get(), [signal.getsignal(s) for s in STOP_SIGNALS]

    n, sent, bad = 0, True, []
    while sent:
        n += 1
        seen = [0]

        def profile(frame, event, arg):
            if event in ("call", "c_return") or (
                event == "return" and not frame.f_code.co_flags & inspect.CO_GENERATOR
            ):
                seen[0] += 1
                if seen[0] == n:
                    signal.raise_signal(signal.SIGTERM)

        old: dict = {}
        early.install(old)
        try:
            before = state()
            sys.setprofile(profile)
            try:
                with make():
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                sys.setprofile(None)
            after = state()
        finally:
            early.restore(old)
        sent = seen[0] >= n
        if after != before:
            bad.append((n, after))
    assert n > 5 and bad == [], bad[:3]


def test_aligned_codes_without_delay_uses_the_prefix_frame():
    codes = aligned_codes([5, 6], 4, [[1], [2]], [0], [[9], [8]], dep_q=1, own_delay=0)
    assert codes.tolist() == [[[4, 5], [0, 1], [9, 8]]]


# ---- the runner -----------------------------------------------------------------------------

_RUNNER = textwrap.dedent("""
    import os, signal, sys, time
    from moshi_mlx.cli.runner import cli_main
    from moshi_mlx.errors import OutputError

    class SlowToSay(OutputError):
        def __str__(self):  # a signal arrives while the error line is being written
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
            return "a long message"

    @cli_main
    def main(argv):
        if argv == ["error"]:
            raise OutputError("cannot write x.wav: no space left on device")
        if argv == ["signal-while-reporting"]:
            raise SlowToSay()
        if argv == ["long-name"]:
            from pathlib import Path
            Path("x" * 300 + ".wav").exists()  # ENAMETOOLONG: pathlib raises it
        if argv == ["bug"]:
            raise RuntimeError("a bug keeps its traceback")
        if argv == ["import-broken-by-signal"]:  # a lazy import of a C extension the signal breaks
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                pass
            raise ImportError('PyCapsule_Import could not import module "datetime"')  # as numpy's, cleared
        if argv == ["import-error"]:
            raise ImportError("a missing module without a signal is a bug")
        if argv[0] == "hangup":  # on a terminal the test takes away (then SIGHUP, or a write finds it gone)
            from moshi_mlx.outputs import write_text
            try:
                print("working", flush=True)
                for _ in range(300):
                    time.sleep(0.1)
                    if argv[2] == "write-first":
                        print(".", end="", flush=True)
            finally:  # signal-first: a status line, then the save (the handler has muted the lost terminal)
                if argv[2] == "signal-first":
                    print("saving what was produced", file=sys.stderr)
                write_text(argv[1], "saved")
                print("saved", file=sys.stderr)  # write-first: this line's EIO reaches the runner
        if argv[0] == "quit-while-saving":  # a temporary file never finished, then three signals
            from moshi_mlx.outputs import Staged
            Staged(os.path.join(argv[1], "o.wav"))
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:  # saving takes long: the user sends the signal twice more
                for _ in range(2):
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(1)
        try:
            os.kill(os.getpid(), int(argv[0]))
            time.sleep(5)
        finally:
            print("saved what was produced", file=sys.stderr)
        return 0

    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize(
    "arg,code,line",
    [
        ("error", 2, "error: cannot write x.wav: no space left on device"),
        (str(int(signal.SIGINT)), 130, "interrupted (SIGINT)"),
        (str(int(signal.SIGTERM)), 143, "interrupted (SIGTERM)"),
        (str(int(signal.SIGHUP)), 129, "interrupted (SIGHUP)"),
        ("signal-while-reporting", 143, "interrupted (SIGTERM)"),  # was a traceback from the `except Error` block
        ("import-broken-by-signal", 143, "interrupted (SIGTERM)"),  # was numpy's ImportError traceback
        ("long-name", 2, "error: file name too long: " + "x" * 300 + ".wav"),  # was an OSError traceback in every CLI
    ],
)
def test_runner_exit_codes_and_one_line(arg, code, line):
    r = subprocess.run([sys.executable, "-c", _RUNNER, arg], capture_output=True, text=True, timeout=60)
    assert r.returncode == code and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == line
    if code != 2 and arg not in ("signal-while-reporting", "long-name", "import-broken-by-signal"):
        assert "saved what was produced" in r.stderr


@pytest.mark.parametrize("first", ["signal-first", "write-first"])
def test_a_terminal_that_hangs_up_stops_the_tool_with_its_outputs_saved(tmp_path, first):
    """The tool's terminal goes away (ssh dropped, window closed): writes to it fail with EIO,
    and SIGHUP comes. The output it saves on the way out is saved, exit 129, though its status
    line cannot be printed: that print's EIO replaced the interrupt and stopped the saving (exit
    1, nothing saved). When a write finds the terminal gone first (no signal yet), the EIO that
    reaches the runner is the hangup too: exit 129, no traceback (it was exit 1)."""
    import pty

    out = tmp_path / "saved.txt"
    master, slave = pty.openpty()
    p = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, "hangup", str(out), first],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    try:
        seen = b""
        while b"working" not in seen:
            seen += os.read(master, 100)
        os.close(master)  # the terminal is gone: writes to it fail (EIO)
        if first == "signal-first":
            p.send_signal(signal.SIGHUP)  # as the kernel sends on a hangup
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 129 and out.read_text() == "saved"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_ignored_when_the_tool_starts_stays_ignored(sig):
    """`nohup moshi-convert ...` (SIGHUP ignored), a job a script starts in the background
    (SIGINT ignored): the signal does not stop the tool, as Python leaves an ignored SIGINT. The
    runner put its handler on them all the same: a logout stopped the nohup'ed run (exit 129)."""
    r = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(int(sig))],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: signal.signal(sig, signal.SIG_IGN),
    )
    assert r.returncode == 0 and r.stderr.strip() == "saved what was produced", (r.returncode, r.stderr)


def test_the_third_signal_quits_at_once_leaving_no_temporary_file(tmp_path):
    """The third stop signal quits without saving (os._exit: no `finally`, no atexit); the
    temporary files of outputs not yet finished are removed first (they were left)."""
    r = subprocess.run(
        [sys.executable, "-c", _RUNNER, "quit-while-saving", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 143 and r.stderr.strip().splitlines()[-1] == "quit (SIGTERM), outputs not saved", r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("cleared", [False, True], ids=["KeyboardInterrupt", "ImportError"])
def test_a_signal_while_a_tool_is_imported_is_one_line(tmp_path, sig, code, cleared):
    """The tools' modules take a few tenths of a second to import (MLX): a Ctrl-C then was a
    KeyboardInterrupt traceback from inside an import (SIGTERM: killed without a word). Inside
    numpy's C import the interrupt becomes an ImportError ('PyCapsule_Import could not import
    module "datetime"', the KeyboardInterrupt cleared): that was a traceback and exit 1."""
    body = f"os.kill(os.getpid(), {int(sig)})\ntime.sleep(5)\n"
    if cleared:
        body = f"try:\n    os.kill(os.getpid(), {int(sig)})\n    time.sleep(5)\nexcept KeyboardInterrupt:\n    pass\n"
        body += "raise ImportError('PyCapsule_Import could not import module \"datetime\"')\n"
    (tmp_path / "slow_tool.py").write_text(f"import os, time\n{body}def main(argv=None):\n    return 0\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [sys.executable, "-c", "import sys; from moshi_mlx.cli.runner import launch; sys.exit(launch('slow_tool'))"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert r.returncode == code and r.stderr.strip() == f"interrupted ({signal.Signals(sig).name})", r.stderr


_SLOW_RUNNER_IMPORT = """
import os, runpy, sys, time
class Slow:  # the runner's import, stretched: a signal lands inside it
    def find_spec(self, name, path, target=None):
        if name == "moshi_mlx.cli.runner":
            os.write(1, b"importing the runner\\n")
            time.sleep(30)
        return None
sys.meta_path.insert(0, Slow())
if sys.argv[1] == "module":
    runpy.run_module("moshi_mlx.run_inference", run_name="__main__", alter_sys=True)
else:
    from moshi_mlx.cli.entry import run_inference
    sys.exit(run_inference())
"""


def _signal_after_line(cmd: list[str], line: str, sig: int):
    """Run `cmd` (SIGINT at its default, as in a terminal), send `sig` once its first stdout
    line is `line`; the process, its remaining stdout and its stderr."""
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert p.stdout.readline() == line
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p, out, err


@pytest.mark.parametrize("how", ["module", "console-script"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_the_runner_is_imported_is_one_line(how, sig):
    """`python -m moshi_mlx.NAME` and the console scripts import the runner (argparse, typing:
    tens of ms under load) before its handlers exist: a Ctrl-C then was a KeyboardInterrupt
    traceback from inside `typing` (exit -2), SIGTERM / SIGHUP a silent death (-15 / -1).
    cli/early.py's handler covers it: one line, 130 / 143 / 129."""
    p, _, err = _signal_after_line([sys.executable, "-c", _SLOW_RUNNER_IMPORT, how], "importing the runner\n", sig)
    assert p.returncode == 128 + sig and err.strip() == f"interrupted ({signal.Signals(sig).name})", (p.returncode, err)


_SIGNAL_AT_A_RUNNER_STEP = """
import importlib.util, os, signal, sys
n, tool_file, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.argv = ["tiny", out]

class Finder:  # `python -m moshi_mlx.tiny_tool`: a tool that writes one file, then says 'done'
    def find_spec(self, name, path, target=None):
        if name == "moshi_mlx.cli.tiny_tool":
            return importlib.util.spec_from_file_location(name, tool_file)

sys.meta_path.insert(0, Finder())
seen = [0]

def profile(frame, event, arg):  # SIGTERM at the runner's n-th call, return or C-call return
    if event in ("call", "c_return", "return") and frame.f_code.co_filename.endswith(
        (os.path.join("cli", "early.py"), os.path.join("cli", "runner.py"))
    ) and not frame.f_code.co_flags & 0x20:  # (not a generator)
        seen[0] += 1
        if seen[0] == n:
            started = "moshi_mlx.cli.runner" in sys.modules
            os.write(2, f"[signal {'after' if started else 'before'} the runner's import]\\n".encode())
            signal.raise_signal(signal.SIGTERM)

import moshi_mlx.errors  # (imported with the package by python -m moshi_mlx.NAME)
sys.setprofile(profile)
from moshi_mlx.cli import early
early.main_module("__main__", "tiny_tool")
"""


def test_a_stop_signal_at_any_step_of_the_runner_is_one_line(tmp_path):
    """A tool run as `python -m moshi_mlx.NAME`, SIGTERM delivered at each step of early.run,
    launch and run_cli in turn: never a traceback; from the runner's import until the tool's
    output is complete, always exit 143 with `interrupted (SIGTERM)` last (or exit 0 once the
    tool has ended). Each gave the handlers back before the next took them, and installed them
    before its `try`: a signal at those points was a traceback ('Interrupted: SIGTERM', exit 1)
    or a silent death (-15) mid-run. Before early.run's handler exists, SIGTERM's default (-15)
    is all there is."""
    tool = tmp_path / "tiny_tool.py"
    tool.write_text(
        "import sys\nfrom moshi_mlx.cli.runner import cli_main\nfrom moshi_mlx.outputs import write_text\n"
        "@cli_main\ndef main(argv=None):\n    write_text(sys.argv[1], '{}')\n    print('done', file=sys.stderr)\n"
    )
    out = tmp_path / "o.json"
    n, bad = 0, []
    while True:
        n += 1
        out.unlink(missing_ok=True)
        r = subprocess.run(
            [sys.executable, "-c", _SIGNAL_AT_A_RUNNER_STEP, str(n), str(tool), str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if "[signal" not in r.stderr:
            break
        lines = r.stderr.strip().splitlines()
        done = out.exists() and "done" in lines
        ok = "Traceback" not in r.stderr and (
            (r.returncode == 143 and lines[-1] == "interrupted (SIGTERM)" and not list(tmp_path.glob(".*partial")))
            or (r.returncode == 0 and done)
            or (r.returncode == -signal.SIGTERM and ("before the runner" in lines[0] or done))
        )
        if not ok:
            bad.append((n, r.returncode, lines))
    assert n > 30 and bad == [], bad[:4]


_SLOW_EXIT_TOOL = """
import atexit, os, sys, time
from moshi_mlx.cli.runner import cli_main

def teardown():  # as MLX freeing its memory, or a tool's atexit clean-up: the interpreter's exit takes a while
    os.write(1, b"exiting\\n")
    time.sleep(2)
    os.write(1, b"exited\\n")

class Freed:  # the same in the modules' teardown, after the interpreter has given the handlers back
    def __del__(self):
        teardown()

@cli_main
def main(argv=None):
    global kept
    if sys.argv[1] == "atexit":
        atexit.register(teardown)
    else:
        kept = Freed()
    print("done", file=sys.stderr)
"""


@pytest.mark.parametrize("phase", ["atexit", "teardown"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_interpreter_exits_is_ignored(tmp_path, sig, phase):
    """The tool has done its work and the interpreter is shutting down (atexit callbacks, MLX
    freeing its memory: tenths of a second) when the signal comes: the exit is the tool's (0),
    the shutdown completes. The handlers were given back before it: SIGTERM killed the process
    without a word (-15), Ctrl-C was a KeyboardInterrupt traceback from the atexit callback.
    In the modules' teardown Python has given its handlers back (SIGTERM: -15 again): the last
    atexit callback leaves the stop signals ignored. (`python -m moshi_mlx.NAME`; the console
    scripts keep the handler too: the shims test.)"""
    (tmp_path / "slow_exit.py").write_text(_SLOW_EXIT_TOOL)
    code = (
        "import importlib.util, sys\n"
        "class F:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'moshi_mlx.cli.slow_exit':\n"
        f"            return importlib.util.spec_from_file_location(name, {str(tmp_path / 'slow_exit.py')!r})\n"
        "sys.meta_path.insert(0, F())\n"
        "from moshi_mlx.cli import early\n"
        f"sys.argv[1:] = [{phase!r}]\n"
        "early.main_module('__main__', 'slow_exit')\n"
    )
    p, out, err = _signal_after_line([sys.executable, "-c", code], "exiting\n", sig)
    assert p.returncode == 0 and out == "exited\n" and "Traceback" not in err, (p.returncode, out, err)
    assert err.strip().splitlines() == ["done"]


def test_module_shims_and_console_scripts_go_through_launch(monkeypatch):
    """Every console script (setup.py reads cli/scripts.py) and every `python -m moshi_mlx.NAME`
    (upstream's names) imports its tool through `launch`."""
    import importlib

    from moshi_mlx.cli import early, entry, runner
    from moshi_mlx.cli.scripts import TOOLS
    from moshi_mlx.errors import STOP_SIGNALS

    root = Path(__file__).resolve().parents[1]
    assert "moshi_mlx.cli.entry:{module}" in (root / "setup.py").read_text()
    launchers = {p.stem for p in (root / "moshi_mlx").glob("*.py") if "main_module(" in p.read_text()}
    assert launchers == set(TOOLS.values()) and "moshi-mimi" in TOOLS  # one launcher per console script
    calls = []
    monkeypatch.setattr(runner, "launch", lambda module, argv=None: calls.append(module) or 0)
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        for script, module in TOOLS.items():
            assert getattr(entry, module)() == 0 and calls[-1] == f"moshi_mlx.cli.{module}"
        assert signal.getsignal(signal.SIGTERM) is early.handler  # a console script's, to the process's end
    finally:  # (this process's are given back)
        for s, h in handlers.items():
            signal.signal(s, h)
    for script, module in TOOLS.items():
        importlib.import_module(f"moshi_mlx.cli.{module}").main  # noqa: B018 - the tool has a main
        shim = importlib.import_module(f"moshi_mlx.{module}")  # importing the shim runs nothing
        assert f'main_module(__name__, "{module}")' in Path(shim.__file__).read_text()


def test_a_reader_that_stops_reading_ends_the_tool_quietly():
    """`moshi-helium ... | head -c 20`: the pipe's reader is gone while the tool still writes
    to stdout: exit 141 (128 + SIGPIPE, as a Unix tool SIGPIPE ends), no traceback. It was a
    BrokenPipeError traceback, twice (the write, then the exit's flush), and exit 1."""
    p = subprocess.Popen(
        [sys.executable, "-m", "moshi_mlx.helium", "--model", "random-tiny-helium", "hello", "--max-tokens", "3000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert len(p.stdout.read(5)) == 5
        p.stdout.close()  # as `head -c 5` does once it has its bytes
        err = p.stderr.read()
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 128 + signal.SIGPIPE and "Traceback" not in err and "Error" not in err, (p.returncode, err)


def test_runner_keeps_tracebacks_of_bugs():
    r = subprocess.run([sys.executable, "-c", _RUNNER, "bug"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" in r.stderr and "a bug keeps its traceback" in r.stderr
    r = subprocess.run([sys.executable, "-c", _RUNNER, "import-error"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" in r.stderr and "without a signal is a bug" in r.stderr


def test_the_docs_new_cli_follows_the_rules(tmp_path, capsys):
    """docs/safety.md's example of a new CLI, run as written: an existing --out is refused
    without --force (rule 1), replaced with it; an output that is the input, or a bad value,
    is one error line; nothing is written by a refused run."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "safety.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    ns: dict = {}
    exec(compile(code, "docs/safety.md", "exec"), ns)
    main = ns["main"]
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text("input")
    assert main([str(src), "--out", str(out)]) == 0 and out.read_text() == "{}"
    out.write_text("mine")
    assert main([str(src), "--out", str(out)]) == 2
    assert out.read_text() == "mine"  # an existing output is never replaced without --force
    assert main([str(src), "--out", str(out), "--force"]) == 0 and out.read_text() == "{}"
    assert main([str(src), "--out", str(src), "--force"]) == 2 and src.read_text() == "input"
    assert main([str(src), "--out", str(tmp_path / "o2.json"), "--seed", "-1"]) == 2
    assert not (tmp_path / "o2.json").exists()
    errs = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(errs) == 3 and all(e.startswith("error: ") for e in errs), errs
