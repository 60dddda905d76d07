"""The first lines a tool runs as a program (`python -m moshi_mlx.NAME`, the console scripts):
a stop signal is the runner's one line and exit code from here on, not only once the runner is
imported. Importing the runner (argparse, typing, re: tens of ms on a loaded machine) was a
window where Ctrl-C printed a KeyboardInterrupt traceback from inside `typing` and SIGTERM killed
the process without a word. This module imports nothing but the standard `atexit`, `signal`, `os`
and `sys` and moshi_mlx.errors (already imported with the package).

The stop-signal handler lives here, and is the one handler from `run` to the tool's end: the
runner's `launch` and `run_cli` find it installed and keep it (they install it themselves when
called directly, e.g. by tests). Each gave the handlers back before the next took them, so a
signal between two of them killed the process without a word (SIGTERM) or was a traceback.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys

from ..errors import STOP_SIGNALS


class Interrupted(KeyboardInterrupt):
    """A stop signal, raised in the main thread where Ctrl-C would be."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class _State:
    signum: int | None = None  # the first stop signal received
    count = 0
    closing = False  # the tool's body has ended: a first signal is recorded, not raised


state = _State()


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def interrupted(signum: int) -> int:
    """A tool stopped by a signal: its one line, `interrupted (SIGTERM)`, and exit code (130 /
    143 / 129). Here, for this module's handler and the runner's alike."""
    print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    return exit_code(signum)


def mute_lost_stdio() -> bool:
    """Point stdout and stderr at /dev/null where what they write can no longer arrive: a pipe
    whose reader is gone, a terminal that hung up (poll says POLLERR / POLLHUP). Whether one
    was. After SIGHUP the terminal is usually gone: every print while the tool saved its
    outputs, and its `interrupted` line, failed with EIO (exit 1, a traceback to nowhere)."""
    import select

    lost = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            if not any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poll.poll(0)):
                continue
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, fd)
            os.close(null)
            lost = True
        except (AttributeError, ValueError, OSError):  # replaced, closed, not a file, no poll(): not judged
            pass
    return lost


def handler(signum: int, frame) -> None:
    """The first signal raises `Interrupted` (the tool's `finally` blocks save its outputs);
    the second is noted; the third quits at once, without saving (its temporary files removed).
    A lost terminal or pipe is muted first (`mute_lost_stdio`), so saving is not stopped by a
    print."""
    state.count += 1
    if state.count == 1:
        state.signum = signum
        mute_lost_stdio()
        if not state.closing:
            raise Interrupted(signum)
        return
    if state.count == 2:
        os.write(2, b"\nstill saving; send the signal again to quit at once without saving\n")
        return
    os.write(2, f"\nquit ({signal.Signals(signum).name}), outputs not saved\n".encode())
    remove_unfinished()
    os._exit(exit_code(state.signum or signum))


def unfinished() -> frozenset:
    """`outputs.unfinished()`, without importing it (not imported: no file was written)."""
    outputs = sys.modules.get("moshi_mlx.outputs")
    return outputs.unfinished() if outputs is not None else frozenset()


def remove_unfinished(keep: frozenset = frozenset()) -> None:
    """`outputs.remove_unfinished(keep)`, without importing it: the temporary output files
    left unfinished (those in `keep`, from before the tool started, are kept)."""
    outputs = sys.modules.get("moshi_mlx.outputs")
    if outputs is not None:
        outputs.remove_unfinished(keep)


def install(old: dict) -> None:
    """Put `handler` on the stop signals, the handlers it replaces into `old` (for `restore`),
    and start a fresh count; nothing when it is there already (whoever put it there restores
    it). Call it inside the `try` whose `finally` restores: a signal may land between any two
    of its calls. Outside the main thread nothing is installed (signals are not Python's there).
    A signal ignored when the tool starts stays ignored, as Python leaves SIGINT: `nohup TOOL`
    (SIGHUP), a job a script starts in the background (SIGINT); a logout ended the run of a
    `nohup moshi-convert ...`, a Ctrl-C a background one."""
    if any(signal.getsignal(s) is handler for s in STOP_SIGNALS):
        return
    state.signum, state.count, state.closing = None, 0, False
    for s in STOP_SIGNALS:
        try:
            if signal.getsignal(s) == signal.SIG_IGN:  # nohup (SIGHUP), a background job (SIGINT): kept so
                continue
            old[s] = signal.getsignal(s)  # recorded first: the handler is given back whatever lands next
            signal.signal(s, handler)
        except (OSError, ValueError):  # not the main thread, or an unusual platform
            old.pop(s, None)


def restore(old: dict) -> None:
    """Give back the handlers `install` replaced."""
    for s in list(old):
        h = old.pop(s)
        signal.signal(s, signal.SIG_DFL if h is None else h)  # None: a handler not set from Python


def run(tool: str, argv: list[str] | None = None, *, program: bool = False) -> int:
    """Import the runner under the handler, then `runner.launch(moshi_mlx.cli.<tool>)`; the exit
    code. Nothing exists yet to save while the runner is imported.

    `program`: this is the process's entry (`python -m`, a console script), so the handler stays
    until the process ends: a signal while the interpreter shuts down (MLX freeing its memory,
    atexit callbacks: tenths of a second) is ignored, the tool's work being done (the third
    still quits at once). With SIGTERM's default back it killed the process without a word
    (-15), and Ctrl-C was a KeyboardInterrupt traceback from an atexit callback."""
    old: dict = {}
    if program:  # first registered, so it runs last: after the tool's own atexit callbacks
        atexit.register(_ignore_stop_signals)
    try:
        install(old)
        from .runner import launch

        return launch(f"moshi_mlx.cli.{tool}", argv)
    except KeyboardInterrupt as e:  # before the runner's own handling began
        return interrupted(getattr(e, "signum", None) or state.signum or signal.SIGINT)
    finally:
        state.closing = True
        if not program:
            restore(old)


def _ignore_stop_signals() -> None:
    """The process's last atexit callback: the interpreter then gives the Python handlers back
    (SIGTERM's default: death, -15) and tears its modules down (tens of ms, freeing MLX's
    memory); an ignored signal it leaves ignored, so a signal then no longer kills a tool whose
    work is done. Only a hang there would need SIGKILL."""
    for s in STOP_SIGNALS:
        try:
            signal.signal(s, signal.SIG_IGN)
        except (OSError, ValueError):
            pass


def main_module(name: str, tool: str) -> None:
    """The package-root launchers (`python -m moshi_mlx.local`, upstream's names and ours): run the
    tool when executed as `__main__`; a plain import does nothing."""
    if name == "__main__":
        sys.exit(run(tool, program=True))
