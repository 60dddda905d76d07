"""The first lines a tool runs as a program (`python -m moshi_mlx.NAME`, the console scripts):
a stop signal is the runner's one line and exit code from here on, not only once the runner is
imported. Importing the runner (argparse, typing, re: tens of ms on a loaded machine) was a
window where Ctrl-C printed a KeyboardInterrupt traceback from inside `typing` and SIGTERM killed
the process without a word. This module imports nothing but the standard `signal` and `sys` and
moshi_mlx.errors (already imported with the package)."""

from __future__ import annotations

import signal
import sys

from ..errors import STOP_SIGNALS


def exit_code(signum: int) -> int:
    return 128 + int(signum)


def interrupted(signum: int) -> int:
    """A tool stopped by a signal: its one line, `interrupted (SIGTERM)`, and exit code (130 /
    143 / 129). Here, for this module's handler and the runner's alike."""
    print(f"interrupted ({signal.Signals(signum).name})", file=sys.stderr)
    return exit_code(signum)


def run(tool: str, argv: list[str] | None = None) -> int:
    """Import the runner under a handler of our own, then `runner.launch(moshi_mlx.cli.<tool>)`;
    the exit code. Nothing exists yet to save while the runner is imported."""
    caught: list[int] = []

    def stop(signum, frame):
        if not caught:
            caught.append(signum)
            raise KeyboardInterrupt

    old = {}
    for s in STOP_SIGNALS:
        try:
            old[s] = signal.signal(s, stop)
        except (OSError, ValueError):  # not the main thread: a caller's business
            pass
    try:
        from .runner import launch
    except KeyboardInterrupt:
        return interrupted(caught[0] if caught else signal.SIGINT)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return launch(f"moshi_mlx.cli.{tool}", argv)


def main_module(name: str, tool: str) -> None:
    """The package-root launchers (`python -m moshi_mlx.local`, upstream's names and ours): run the
    tool when executed as `__main__`; a plain import does nothing."""
    if name == "__main__":
        sys.exit(run(tool))
