"""The one way files are written: checked before any work, never half-written, never over an input.

Rules (docs/safety.md):
- `check_outputs` runs before any model is loaded: each output's folder exists and is
  writable, the path is not a folder (nor a device or other special file), its extension is
  one the writer knows, no two roles share a path (input/output, record/transcript, ...),
  and an existing file is only replaced when the caller allows it (`--force`).
- `Staged` writes to a temporary name in the same folder and renames it over the final
  name only when complete (`commit`), so an interrupted or failed write leaves the old file
  (or nothing) under the final name. `discard` removes the temporary file.
- `StagedGroup` renames the outputs of one run together (a run's audio, transcript and
  tokens): a run that stops early or fails to write one of them never leaves new files beside
  old ones it does not match.
- A stop signal is an exception that may land between any two calls, also between creating a
  temporary file and the line that would remember it. So every temporary file is recorded
  (`_UNFINISHED`) before it is created, and `remove_unfinished` (the CLI runner on its way
  out, and at interpreter exit) removes those neither renamed nor discarded.
- Write failures (disk full, file too large, device gone) become one-line `OutputError`s.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import errno
import os
import secrets
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from .errors import STOP_SIGNALS, OutputError

PARTIAL_SUFFIX = ".partial"

# The temporary files of this process not yet renamed into place nor removed. A name is added
# before its file is created and taken out after: an interrupt between the two steps of either
# leaves a name whose file is absent (harmless), never a file nobody knows of.
_UNFINISHED: set[Path] = set()
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class Output:
    """One output of a command: its role (a flag name, shown in messages), path, the
    extensions its writer knows (None: any) and whether an existing file may be replaced."""

    role: str
    path: str | os.PathLike | None
    suffixes: tuple[str, ...] | None = None
    overwrite: bool = True


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(out: Output) -> Path | None:
    """Check one output path before any work; returns it as a Path (None when not given)."""
    if out.path is None:
        return None
    raw = os.fspath(out.path)
    if raw == "":
        raise OutputError(f"{out.role}: empty path")
    p = Path(raw).expanduser()
    if raw.endswith(os.sep) or p.is_dir():
        raise OutputError(f"{out.role}: {p} is a folder; give a file name")
    if out.suffixes is not None and p.suffix.lower() not in out.suffixes:
        got = repr(p.suffix) if p.suffix else "no extension"
        raise OutputError(f"{out.role}: {p} has {got}; expected {', '.join(out.suffixes)}")
    parent = p.parent
    if not parent.exists():
        raise OutputError(f"{out.role}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"{out.role}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out.role}: folder {parent} is not writable")
    if p.exists() or p.is_symlink():
        if not p.is_file():
            raise OutputError(f"{out.role}: {p} exists and is not a regular file; it will not be replaced")
        if not out.overwrite:
            raise OutputError(f"{out.role}: {p} already exists; use --force to overwrite it")
    return p


def check_outputs(
    outputs: Iterable[Output], inputs: Iterable[tuple[str, str | os.PathLike | None]] = ()
) -> list[Path | None]:
    """Refuse a path in two roles (an output that is also an input, two outputs at one
    path), then check every output (see `check_output`); all before any work."""
    outputs = list(outputs)
    seen: list[tuple[str, Path]] = []
    for role, path in inputs:
        if path is not None and str(path) not in ("", "-") and not str(path).startswith(("hf://", "random")):
            p = Path(os.fspath(path)).expanduser()
            seen.append((role, p))
            if p.is_dir():  # a model folder: its files are inputs too (a report over its config.json, ...)
                seen.extend((role, f) for f in sorted(p.iterdir()) if f.is_file())
    n_inputs = len(seen)
    for o in outputs:
        if o.path is None or os.fspath(o.path) == "":
            continue
        p = Path(os.fspath(o.path)).expanduser()
        for i, (role, q) in enumerate(seen):
            if _same(p, q):
                what = "input would be overwritten" if i < n_inputs else "second would overwrite the first"
                raise OutputError(f"{role} and {o.role} are the same file ({p}): the {what}")
        seen.append((o.role, p))
    return [check_output(o) for o in outputs]


def os_error(path: str | os.PathLike, e: OSError, doing: str = "write") -> OutputError:
    """A one-line OutputError for a failed write ("disk full" spelled out)."""
    reason = {
        errno.ENOSPC: "no space left on device",
        errno.EFBIG: "file too large (file size limit reached)",
        errno.EDQUOT: "disk quota exceeded",
        errno.EROFS: "read-only file system",
        errno.EACCES: "permission denied",
        errno.EIO: "input/output error (device gone?)",
    }.get(e.errno, e.strerror or str(e))
    return OutputError(f"cannot {doing} {path}: {reason}")


class Staged:
    """A file written under a temporary name in its final folder, renamed into place by
    `commit()`. Use `temp` (a path) with writers that want a name, or `open()`.

        with Staged("out.json") as s:        # commit on success, discard on any exception
            s.temp.write_text(...)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(os.fspath(path)).expanduser()
        self.done = False
        while True:  # as tempfile.mkstemp (mode 0o600 until the rename), but recorded first
            self.temp = self.path.parent / f".{self.path.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
            _UNFINISHED.add(self.temp)
            try:
                os.close(os.open(self.temp, _CREATE_FLAGS, 0o600))
                return
            except FileExistsError:
                _UNFINISHED.discard(self.temp)
            except OSError as e:
                _UNFINISHED.discard(self.temp)
                raise os_error(self.path, e, "create") from None
            except BaseException:  # a stop signal: no file is left, whether it was created or not
                self.discard()
                raise

    def open(self, mode: str = "wb", **kw) -> IO:
        return open(self.temp, mode, **kw)

    def commit(self) -> Path:
        """Make the temporary file the final one (atomic on one file system); inside a
        `StagedGroup.collect()` block, only mark it ready for the group's `commit`."""
        if self.done:
            return self.path
        group = _GROUP.get()
        if group is not None:
            if self not in group.ready:
                group.ready.append(self)
            return self.path
        return self._rename()

    def _rename(self) -> Path:
        try:
            if self.path.exists():
                with contextlib.suppress(OSError):
                    os.chmod(self.temp, self.path.stat().st_mode & 0o7777)
            else:
                umask = os.umask(0)
                os.umask(umask)
                with contextlib.suppress(OSError):
                    os.chmod(self.temp, 0o666 & ~umask)
            os.replace(self.temp, self.path)
        except OSError as e:
            self.discard()
            raise os_error(self.path, e) from None
        except BaseException:  # a Ctrl-C at the rename: the final name keeps what it had, no temporary left
            self.discard()
            raise
        self.done = True
        _UNFINISHED.discard(self.temp)
        return self.path

    def discard(self) -> None:
        """Remove the temporary file; the final name keeps what it had (or stays absent)."""
        if not self.done:  # `done` last: a discard cut short by a signal is done again by the next call
            with contextlib.suppress(OSError):
                os.unlink(self.temp)
            _UNFINISHED.discard(self.temp)
            self.done = True

    def __enter__(self) -> "Staged":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Renames that belong together (a model folder's weights and its config.json): a stop
    signal meanwhile is delivered once the block is done, so an interrupt never leaves one new
    file beside an old one it does not fit. Keep the block to a few renames. Main thread only
    (elsewhere signals are not Python's to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old: dict = {}
    try:  # each handler recorded before it is replaced: one a signal interrupts is given back too
        for s in STOP_SIGNALS:
            old[s] = signal.getsignal(s)
            signal.signal(s, lambda signum, frame: held.append(signum))
        yield
    finally:
        _give_back(old)
        if held:
            signal.raise_signal(held[0])  # to the handler it was meant for (the runner's: KeyboardInterrupt)


def _give_back(old: dict) -> None:
    """Restore the handlers in `old`, all of them even when a restored one raises meanwhile
    (the runner's, for a signal landing between two): the rest were left holding."""
    try:
        while old:
            s = next(iter(old))
            signal.signal(s, signal.SIG_DFL if old[s] is None else old[s])  # None: a handler not set from Python
            del old[s]
    finally:
        if old:
            _give_back(old)


def unfinished() -> frozenset[Path]:
    """The temporary files of this process neither renamed into place nor removed yet."""
    return frozenset(_UNFINISHED)


def remove_unfinished(keep: Iterable[Path] = ()) -> None:
    """Remove every temporary file left unfinished (but those in `keep`): what a stop signal
    between two lines of a writer (its temporary file created, not yet known to the code
    that would discard it) left behind. For when no writer will finish: the CLI runner calls
    it as a tool ends (`keep`: those from before it started), and it runs at interpreter exit."""
    keep = set(keep)
    for p in list(_UNFINISHED):
        if p not in keep:
            with contextlib.suppress(OSError):
                os.unlink(p)
            _UNFINISHED.discard(p)


atexit.register(remove_unfinished)
if hasattr(os, "register_at_fork"):  # a forked child's exit removes nothing of its parent's
    os.register_at_fork(after_in_child=_UNFINISHED.clear)


_GROUP: contextvars.ContextVar["StagedGroup | None"] = contextvars.ContextVar("staged_group", default=None)


class StagedGroup:
    """The outputs of one run, renamed into place together. Inside `collect()`, every
    `Staged.commit()` (of any writer: `write_audio`, `Transcript.save`, `save_tokens`, ...)
    only marks its file ready; `commit()` then renames them all at once, a stop signal held
    until the last (`signals_held`). An exception in the block discards them all, so
    the final names keep what they had.

        group = StagedGroup()
        with group.collect():
            write_audio(out, pcm); transcript.save(tr)
        group.commit()                   # both, or (an interrupt in the block) neither
    """

    def __init__(self) -> None:
        self.ready: list[Staged] = []

    @contextlib.contextmanager
    def collect(self) -> Iterator["StagedGroup"]:
        outer = _GROUP.get()
        try:  # set inside the try: a signal just after it (a reset token not yet stored) still restores
            _GROUP.set(self)
            yield self
        except BaseException:
            self.discard()
            raise
        finally:
            _GROUP.set(outer)

    def commit(self, replace: bool = True) -> list[Path]:
        """Rename every ready file into place; `replace=False` (a run that did not complete)
        renames only those whose final name is free and discards the others, so no file the
        user had is replaced. Returns the final paths written."""
        done: list[Path] = []
        try:
            with signals_held():
                for s in self.ready:
                    if replace or not (s.path.exists() or s.path.is_symlink()):
                        done.append(s._rename())
                    else:
                        s.discard()
        finally:
            self.discard()  # the rest, after a failed rename
        return done

    def discard(self) -> None:
        """Remove every temporary file not yet renamed."""
        for s in self.ready:
            s.discard()
        self.ready = []


@contextlib.contextmanager
def write_staged(path: str | os.PathLike, mode: str = "wb", **kw) -> Iterator[IO]:
    """Open `path` for writing through a `Staged` file; OSErrors become `OutputError`."""
    staged = Staged(path)
    try:
        try:
            with staged.open(mode, **kw) as f:
                yield f
        except OSError as e:
            if isinstance(e, OutputError):
                raise
            raise os_error(staged.path, e) from None
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a whole text file (UTF-8) atomically."""
    with write_staged(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)
