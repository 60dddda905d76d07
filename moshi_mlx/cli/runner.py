"""The one way a command-line tool runs: errors as one line, signals as a clean stop.

Every CLI's `main` goes through `run_cli` (or the `@cli_main` decorator):

- a `moshi_mlx.errors.Error` (bad value, config, weights, audio, device, output) is printed
  as `error: <message>` on stderr (the API parameters it names, `n_q=3`, as their flags,
  `--n-q 3`: `flag_words`), exit code 2; so is a file name too long for the file
  system (ENAMETOOLONG, raised by any look-up of a user's path). Nothing else is caught:
  any other exception is a bug and keeps its traceback.
- SIGINT (Ctrl-C), SIGTERM and SIGHUP raise `Interrupted` (a `KeyboardInterrupt`) in the
  main thread, so the tool's `finally` blocks save what it produced (recording,
  transcript, tokens) exactly as for Ctrl-C; then one line `interrupted (SIGTERM)` and exit
  code 128 + the signal number (130 / 143 / 129), whatever the tool returned. Further
  signals while it saves are ignored (the third one quits at once, without saving).
- On the way out, pipelines still running are aborted and their MLX worker threads
  waited for: a thread still inside MLX while the interpreter shuts down aborts the
  process ("terminate called without an active exception", SIGABRT). Then any temporary
  output file the tool left unfinished is removed (`outputs.remove_unfinished`): a signal
  can land between a writer creating its `.NAME.XXXX.partial` and the line that would
  discard it.

Adopting it in a new tool (see docs/safety.md):

    from .runner import cli_main

    @cli_main
    def main(argv: list[str] | None = None) -> int:
        args = parser().parse_args(argv)
        ...                      # raise moshi_mlx.errors.Error subclasses for user mistakes
        return 0
"""

from __future__ import annotations

import argparse
import errno
import functools
import signal
import sys
from typing import Callable

from ..errors import Error
from .flag_words import in_flag_words
from .early import exit_code, install, interrupted, mute_lost_stdio, remove_unfinished, restore, state, unfinished


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one `error: ...` line (no usage block),
    exit code 2, like every other user error. No abbreviations (`allow_abbrev=False`):
    `--quantize 8` must not silently stand for `--quantized 8`, and a flag added later must
    not change what an old command line means."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102 - argparse API
        head, _, rest = message.partition(": ")
        if head.startswith("argument ") and rest.startswith(tuple(head[9:].split("/"))):
            message = rest  # "argument --temp: --temp must be ..." names the flag once
        self.exit(2, f"error: {message} (see --help)\n")


def received_signal() -> int | None:
    """The stop signal received during this run (None if none): a tool that handles
    KeyboardInterrupt itself can say what stopped it."""
    return state.signum


def _stop_workers() -> None:
    """Abort pipelines left running (MLX worker threads must be idle when Python exits)."""
    pipeline = sys.modules.get("moshi_mlx.runtime.pipeline")
    if pipeline is not None:
        pipeline.abort_all()


def _run_body(fn: Callable[..., int | None], argv: list[str] | None) -> int:
    try:
        try:
            return int(fn(argv) or 0)
        finally:
            _stop_workers()
    except Error as e:  # runtime/ names API parameters: printed as the flags that give them
        print(f"error: {in_flag_words(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout's reader stopped reading (`moshi-helium ... | head -1`)
        if not mute_lost_stdio():
            raise
        return exit_code(signal.SIGPIPE)  # quietly, as a Unix tool SIGPIPE ends
    except OSError as e:  # a path the file system cannot even look up (from any stat/open of a user's path)
        if e.errno == errno.EIO and mute_lost_stdio():  # a write to a terminal that hung up (its SIGHUP may follow)
            return exit_code(signal.SIGHUP)
        if e.errno != errno.ENAMETOOLONG:
            raise
        print(f"error: file name too long: {e.filename}", file=sys.stderr)
        return 2
    except SystemExit as e:  # argparse (--help, a bad flag): its code, as a return value
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)


def run_cli(fn: Callable[..., int | None], argv: list[str] | None = None) -> int:
    """Run a tool's body with the rules above; returns the process exit code. Every step is
    inside the `try`: a signal may land between any two calls, the handler's installing too."""
    old: dict = {}
    before: frozenset = frozenset()
    code = 0
    try:
        try:
            install(old)
            before = unfinished()
            code = _run_body(fn, argv)
        finally:
            state.closing = True  # from here a first signal is recorded (its line, its code), not raised
            remove_unfinished(before)
    except KeyboardInterrupt as e:  # in the body, or while an error was reported (the only one raised)
        signum = getattr(e, "signum", None) or state.signum or signal.SIGINT
        state.signum = signum
        code = exit_code(signum)
    except ImportError:  # an import the signal broke (see launch): interrupted, not a bug
        if state.signum is None:
            raise
        code = exit_code(state.signum)
    finally:
        restore(old)
    if state.signum is not None:
        code = interrupted(state.signum)
    sys.stderr.flush()
    return code


def launch(module: str, argv: list[str] | None = None) -> int:
    """Import a tool's module (`moshi_mlx.cli.NAME`), then run its `main`: what `python -m
    moshi_mlx.NAME` and the console scripts call. The import takes a few tenths of a second
    (MLX, numpy); a Ctrl-C or SIGTERM during it ends with the same one line and exit code
    as later, not a KeyboardInterrupt traceback from inside an import. A C extension may turn
    the interrupt into an ImportError of its own (numpy: 'PyCapsule_Import could not import
    module "datetime"', with the KeyboardInterrupt cleared): whatever the import raised once a
    stop signal came is the interrupt."""
    import importlib

    old: dict = {}
    try:
        try:
            install(old)
            tool = importlib.import_module(module)
        except BaseException as e:
            signum = getattr(e, "signum", None) or state.signum
            if signum is None and not isinstance(e, KeyboardInterrupt):
                raise
            return interrupted(signum or signal.SIGINT)
        return tool.main(argv)  # under the same handler: none is given back in between
    except KeyboardInterrupt as e:  # after the import, before the tool's run_cli began
        return interrupted(getattr(e, "signum", None) or state.signum or signal.SIGINT)
    finally:
        restore(old)


def cli_main(fn: Callable[..., int | None]) -> Callable[[list[str] | None], int]:
    """Decorator: `main(argv)` runs `fn(argv)` through `run_cli` and returns the exit code
    (console scripts and `sys.exit(main())` use it as such)."""

    @functools.wraps(fn)
    def main(argv: list[str] | None = None) -> int:
        return run_cli(fn, argv)

    main.body = fn  # the undecorated function, for tests that want exceptions as they are
    return main
