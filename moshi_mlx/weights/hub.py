"""The one helper that turns a file spec into a local path.

A spec is a local path, `hf://owner/repo/path/in/repo`, or a bare file name looked up in a
Hugging Face repo, or in a local model folder given where a repo is expected.
`HF_HUB_OFFLINE=1` (huggingface_hub's own switch) or `offline_mode()` serves from the cache.
Downloads show huggingface_hub's own (tqdm) progress bars.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
from pathlib import Path
from typing import Iterator

from ..errors import UsageError
from .errors import WeightsError

_OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("moshi_mlx_offline", default=False)


@contextlib.contextmanager
def offline_mode(on: bool = True) -> Iterator[None]:
    """Within the block, files come from the local Hugging Face cache only (no network),
    as with HF_HUB_OFFLINE=1 but for this thread of work alone."""
    token = _OFFLINE.set(bool(on) or _OFFLINE.get())
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def _hub_unreachable() -> bool:
    """True when the Hub's host name does not resolve (no network): huggingface_hub would
    then retry each file for ~25 s, printing a warning per try, before failing. Behind a
    proxy the name may resolve only there, so nothing is assumed."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    try:
        from urllib.parse import urlparse

        from huggingface_hub import constants

        host = urlparse(constants.ENDPOINT).hostname
        if host:
            socket.getaddrinfo(host, 443)
    except OSError:  # socket.gaierror: the name does not resolve
        return True
    except Exception:  # noqa: BLE001 - an odd endpoint setting: let huggingface_hub decide
        return False
    return False


def _download(repo: str, filename: str) -> Path:
    local = Path(repo).expanduser()
    if local.is_dir():  # a local model folder (e.g. from `moshi_mlx.convert`) stands in for a repo
        if (local / filename).is_file():
            return local / filename
        raise WeightsError(f"model folder {repo} has no file {filename!r}")
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")) or repo.endswith("/"):  # not owner/name
        raise WeightsError(f"{repo}: no such model folder (and not a Hugging Face repo id, owner/name)")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        raise WeightsError("huggingface-hub is not installed; pass local file paths instead") from None
    try:
        if _OFFLINE.get() or _hub_unreachable():  # no network: the cache only, at once
            return Path(hf_hub_download(repo, filename, local_files_only=True))
        return Path(hf_hub_download(repo, filename))
    except Exception as e:  # the hub raises many types; they all mean "could not get it"
        offline = _OFFLINE.get() or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        name = type(e).__name__
        if offline or "LocalEntryNotFound" in name or "OfflineMode" in name:
            raise WeightsError(
                f"{filename} from {repo} is not in the local Hugging Face cache"
                + (" and offline mode is on" if offline else " and the Hub cannot be reached")
                + "; download it once online or pass a local path"
            ) from None
        if "RepositoryNotFound" in name:
            raise WeightsError(f"Hugging Face repo {repo!r} does not exist or is private") from None
        if "EntryNotFound" in name:
            raise WeightsError(f"Hugging Face repo {repo!r} has no file {filename!r}") from None
        raise WeightsError(f"could not download {filename} from {repo}: {name}: {e}".splitlines()[0]) from None


def hf_get(spec: str | os.PathLike, repo: str | None = None) -> Path:
    """Resolve `spec` to a local file (see module docstring)."""
    s = str(spec)
    if s.startswith("hf://"):
        parts = s[len("hf://") :].split("/")
        if len(parts) < 3:
            raise UsageError(f"bad Hub spec {s!r}: expected hf://owner/repo/path")
        return _download("/".join(parts[:2]), "/".join(parts[2:]))
    path = Path(s).expanduser()
    if path.exists():
        return path
    if repo is not None and os.sep not in s and "/" not in s:
        return _download(repo, s)
    raise WeightsError(f"file not found: {s}")


def hf_get_optional(filename: str, repo: str) -> Path | None:
    """Like `hf_get(filename, repo)` but None when the repo simply lacks the file."""
    try:
        return _download(repo, filename)
    except WeightsError as e:
        if "has no file" in str(e):
            return None
        raise
