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
import re
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
    outer = _OFFLINE.get()
    try:  # set inside the try: a stop signal just after it (a reset token not yet stored) still restores
        _OFFLINE.set(bool(on) or outer)
        yield
    finally:
        _OFFLINE.set(outer)


# (host, port) of the Hub -> whether it answered a connection, once per process
_REACHABLE: dict[tuple[str, int], bool] = {}
_PROBE_TIMEOUT_S = 3.0


def _hub_address() -> tuple[str, int] | None:
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return (url.hostname, url.port or (80 if url.scheme == "http" else 443)) if url.hostname else None


def _hub_unreachable() -> bool:
    """True when the Hub cannot be reached: its host name does not resolve (no network), or
    it resolves but a connection is refused or times out (a firewall, a captive network).
    huggingface_hub would then retry each file for ~25 s, printing a warning per try, before
    falling back to the cache or failing. Behind a proxy the name may resolve only there, so
    nothing is assumed. The name and the connection are probed once per process (3 s at most
    for the connection): a resolver that times out would otherwise cost its timeout on every
    file looked up (4 to 5 per model)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    try:
        addr = _hub_address()
    except Exception:  # noqa: BLE001 - an odd endpoint setting: let huggingface_hub decide
        return False
    if addr is None:
        return False
    if addr not in _REACHABLE:
        try:
            socket.getaddrinfo(*addr)
            socket.create_connection(addr, timeout=_PROBE_TIMEOUT_S).close()
            _REACHABLE[addr] = True
        except OSError:  # the name does not resolve (socket.gaierror); refused, unreachable, timed out
            _REACHABLE[addr] = False
        except Exception:  # noqa: BLE001 - an odd endpoint setting: let huggingface_hub decide
            return False
    return not _REACHABLE[addr]


def broken_link(
    path: str | os.PathLike, what: str | None = None, how: str = "download the file again"
) -> WeightsError | None:
    """The error for a path that is a symbolic link to nothing (a `--local-dir` download by an
    older huggingface_hub links into the cache, whose blobs a cleanup may delete): `ls` shows
    the file, so 'not found' would be a puzzle. None when `path` is not such a link. `what`
    names the file otherwise than by its path, `how` says what to do."""
    p = Path(path).expanduser()
    if not p.is_symlink() or p.exists():
        return None
    return WeightsError(
        f"{what or path} is a broken link (to {os.readlink(p)}, which no longer exists, e.g. after a cache "
        f"cleanup): {how}"
    )


def present(path: str | os.PathLike) -> bool:
    """Whether `path` is a file, a broken link to one raising `broken_link`'s error: a
    config.json whose blob was deleted is not an absent one (the preset or the shapes would
    quietly stand in for what it said)."""
    if Path(path).expanduser().is_file():
        return True
    err = broken_link(path)
    if err is not None:
        raise err
    return False


def _broken_in_cache(repo: str, filename: str) -> WeightsError | None:
    """`broken_link`'s error for `filename` of `repo` in the cache's main snapshot (its blob
    deleted by a cleanup; huggingface_hub then reports it as never downloaded), None otherwise."""
    snap = cached_revision(repo, "main")
    if snap is None:
        return None
    return broken_link(
        snap / filename,
        f"{filename} of {repo} in the Hugging Face cache ({snap / filename})",
        f"download it again online ({download_command(repo, filename)})",
    )


def stand_in(path: str | os.PathLike) -> str | None:
    """What a file holds instead of the model file it should be, when a download went wrong:
    nothing (an empty file), a Git LFS pointer (a `git clone` of a Hub repo without git-lfs leaves ~130-byte text files
    in place of every weights and tokenizer file), or a web page (an error or login page
    saved under the file's name). None otherwise. Only the first bytes are read."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head:
        return "an empty file (0 bytes: a download or copy that did not finish, or a disk that was full): download it again"
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return (
            "a Git LFS pointer, not the file itself (the repo was cloned without git-lfs): run "
            "git lfs pull in its folder, or download it with hf download"
        )
    if head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
        return "a web page, not the file itself (an error or login page was saved in its place): download it again"
    return None


def download_command(repo: str, filename: str | None = None) -> str:
    """The shell command that puts `filename` (or the whole repo) of `repo` in the cache."""
    try:
        from huggingface_hub import __version__ as v

        major, minor = (int(x) for x in v.split(".")[:2])
        cli = "hf download" if (major, minor) >= (0, 34) else "huggingface-cli download"
    except Exception:  # noqa: BLE001 - an odd version string: the current CLI's name
        cli = "hf download"
    return f"{cli} {repo}" + (f" {filename}" if filename else "")


_HUB_ADDRESSES = ("https://huggingface.co/", "http://huggingface.co/", "https://hf.co/", "hf.co/", "huggingface.co/")


def _address_parts(spec: str) -> list[str] | None:
    """The path of a Hub web address as its parts (owner, name, then blob / resolve / tree,
    the revision, the file's path), each unquoted, so that a revision written `refs%2Fpr%2F1`
    stays one part; None when `spec` is no such address."""
    from urllib.parse import unquote

    for prefix in _HUB_ADDRESSES:
        if spec.startswith(prefix):
            return [unquote(p) for p in spec[len(prefix) :].split("?")[0].split("#")[0].split("/")]
    return None


def _subfolder(parts: list[str]) -> str:
    """The folder inside the repo a page address (`.../tree/REV/FOLDER`) shows, '' for its top."""
    return "/".join(p for p in parts[4:] if p) if parts[2] == "tree" else ""


def _download_folder(repo: str, folder: str, rev: str | None = None) -> str:
    """'hf download REPO [--revision REV] [--include "FOLDER/*"] --local-dir DIR) and pass DIR[/FOLDER]':
    the end of a refusal of a repo page, naming the download that gets what it shows."""
    how = (
        download_command(repo) + (f" --revision {rev}" if rev else "") + (f' --include "{folder}/*"' if folder else "")
    )
    return f"{how} --local-dir DIR) and pass DIR{'/' + folder if folder else ''}"


def _revision(spec: str, repo: str, rev: str, file: str = "", folder: str = "") -> str | None:
    """A Hub address (or `owner/name@rev`) of revision `rev`: None for main (the files are
    read from main anyway); the local path of the repo's snapshot of that revision (or of
    `file` in it) when the cache holds it (`cached_revision`: a download with --revision
    leaves it there); else refused in one line, file and repo page alike: files are read from
    the main revision (there is no revision flag), so the other one would be quietly replaced."""
    if rev == "main":
        return None
    snap = cached_revision(repo, rev)
    if snap is not None and not folder and (not file or (snap / file).is_file()):
        return str(snap / file) if file else str(snap)
    if file:
        what, how = "a file", download_command(repo, file) + f" --revision {rev}) and pass its path"
    else:
        what, how = f"the folder {folder!r} of the repo" if folder else "the repo", _download_folder(repo, folder, rev)
    raise UsageError(
        f"{spec}: {what} of revision {rev!r}, but files are read from a repo's main revision: download it ({how}"
    )


def _main_revision_only(spec: str, parts: list[str]) -> str | None:
    """`_revision` for a Hub address's parts (owner, name, blob/resolve/tree, rev, file...)."""
    file = "/".join(parts[4:]) if parts[2] != "tree" else ""  # (tree: a folder)
    return _revision(spec, "/".join(parts[:2]), parts[3], file, _subfolder(parts))


def _top_level_only(spec: str, parts: list[str]) -> None:
    """Refuse a repo page of a folder inside the repo (`.../tree/main/FOLDER`), in one line: a
    model is read from a repo's top level (its config.json, weights, Mimi and tokenizer there;
    there is no subfolder option), so the folder would be quietly dropped for the top."""
    folder = _subfolder(parts)
    if folder:
        raise UsageError(
            f"{spec}: the folder {folder!r} of the repo {'/'.join(parts[:2])}, but a model is read from a "
            f"repo's top level (there is no subfolder option): download it ({_download_folder('/'.join(parts[:2]), folder)}"
        )


def cached_revision(repo: str, rev: str) -> Path | None:
    """The cache's snapshot folder of revision `rev` of `repo`: a branch or tag huggingface_hub
    recorded (`refs/REV`, left by a download with --revision REV), or a commit hash (7 or more
    of its first characters); None when the cache holds none."""
    root = _repo_cache(repo)
    if root is None or not rev or ".." in rev.split("/") or not (root / "snapshots").is_dir():
        return None
    ref = root / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    if "/" not in commit and (root / "snapshots" / commit).is_dir():
        return root / "snapshots" / commit
    if re.fullmatch(r"[0-9a-f]{7,39}", rev):
        hits = [p for p in (root / "snapshots").iterdir() if p.name.startswith(rev) and p.is_dir()]
        if len(hits) == 1:
            return hits[0]
    return None


def hub_file_spec(spec: str | os.PathLike) -> str:
    """`spec` as `hf://owner/name/path` when it is a file's Hub address copied from a browser
    (https://huggingface.co/owner/name/blob/main/path, or .../resolve/main/path?download=true);
    else unchanged. Files come from a repo's main revision: another revision is refused."""
    parts = _address_parts(str(spec).strip())
    if parts is not None and len(parts) >= 5 and parts[2] in ("blob", "resolve") and parts[4]:
        return _main_revision_only(str(spec), parts) or "hf://" + "/".join(parts[:2] + parts[4:])
    return str(spec)


def web_address(spec: str | os.PathLike) -> UsageError | None:
    """The error for an http(s) address left once Hub addresses are read (`hub_file_spec`,
    `repo_id`): files are read from disk or the Hugging Face cache, never fetched from a URL
    (offline-first). None for any other spec."""
    s = str(spec).strip()
    if not s.lower().startswith(("http://", "https://")):
        return None
    return UsageError(
        f"{s} is a web address: model files are read from disk or the Hugging Face cache, not from a URL; "
        f"download it first ({download_command('OWNER/NAME', 'FILE')} for a file on the Hub, then give "
        "OWNER/NAME or hf://OWNER/NAME/FILE) or give a local path"
    )


def repo_id(spec: str) -> str:
    """`spec` as a repo id when it is one written loosely: a trailing slash, `hf://owner/name`,
    or the repo's page address (https://huggingface.co/owner/name, as copied from a browser);
    else unchanged. A page of another revision than main (`.../tree/dev`), or `owner/name@rev`,
    is its cached snapshot folder, else refused, as a file's address of one is (`hub_file_spec`);
    a page of a folder inside the repo (`.../tree/main/FOLDER`: it was read as the repo's top)
    is refused."""
    s = spec.strip()
    parts = _address_parts(s)
    if parts is not None and len(parts) >= 4 and parts[2] == "tree" and parts[3]:
        local = _main_revision_only(spec, parts)
        if local is not None:
            return local
        _top_level_only(spec, parts)
    if "@" in s and not s.startswith(_HUB_ADDRESSES):  # owner/name@rev, hf://owner/name@rev (HfFileSystem's)
        repo, rev = s.removeprefix("hf://").rstrip("/").rsplit("@", 1)
        if is_repo_id(repo) and rev and "/" not in rev and not Path(s).expanduser().exists():
            return _revision(spec, repo, rev) or repo
    for prefix in ("hf://", *_HUB_ADDRESSES):
        if s.startswith(prefix):
            s = s[len(prefix) :]
            parts = s.split("/")
            s = "/".join(parts[:2]) if len(parts) >= 2 and (len(parts) == 2 or parts[2] in ("", "tree")) else spec
            break
    s = s.rstrip("/")
    return s if is_repo_id(s) else spec


def is_repo_id(repo: str) -> bool:
    """Whether `repo` can name a Hub repo (owner/name, in the characters the Hub allows): a
    local path with a space, an accent or `..` that does not exist is a missing folder, not a
    repo to look for in the cache or download."""
    if repo.count("/") != 1 or repo.startswith((".", "/", "~")) or repo.endswith("/"):
        return False
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo)
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        return True
    except Exception:  # noqa: BLE001 - huggingface_hub's HFValidationError
        return False
    return True


def _no_folder_note(repo: str) -> str:
    """A note for a repo id that may have been meant as a local folder (its first part is a
    folder here: `models/moshiko-q4`), so a mistyped path is not taken for a Hub repo alone."""
    return f" (nor is there a folder {repo} here)" if Path(repo).expanduser().parent.is_dir() else ""


def _repo_cache(repo: str) -> Path | None:
    """The repo's folder in the Hugging Face cache (None for a malformed repo id)."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=cached_spelling(repo), repo_type="model")
    except Exception:  # noqa: BLE001 - ImportError, or huggingface_hub's HFValidationError
        return None


def cached_spelling(repo: str) -> str:
    """`repo` as the Hugging Face cache spells it. The Hub resolves repo ids whatever their
    capitals, but the cache names a repo's folder as it was typed when downloaded: a folder
    of this exact spelling first, else the one cached `models--owner--name` folder whose id
    differs only in capitals (`Kyutai/Moshiko-PyTorch-BF16` for `kyutai/moshiko-pytorch-bf16`),
    else `repo` as given."""
    try:
        from huggingface_hub import constants

        root = Path(constants.HF_HUB_CACHE)
        if (root / ("models--" + repo.replace("/", "--"))).is_dir() or not root.is_dir():
            return repo
        want = repo.lower()
        same = sorted(
            p.name[len("models--") :].replace("--", "/", 1)
            for p in root.glob("models--*")
            if p.name[len("models--") :].replace("--", "/", 1).lower() == want and p.is_dir()
        )
    except Exception:  # noqa: BLE001 - an unreadable cache: as given
        return repo
    return same[0] if len(same) == 1 else repo


def _other_snapshot(repo: str, filename: str) -> Path | None:
    """`filename` in a snapshot other than the main revision's, newest first: the cache of a
    download by commit hash (no refs/main), or of a main that moved on since the file came."""
    root = _repo_cache(repo)
    if root is None or not (root / "snapshots").is_dir():
        return None
    found = [s / filename for s in (root / "snapshots").iterdir() if (s / filename).is_file()]
    return max(found, key=lambda p: p.parent.stat().st_mtime) if found else None


def repo_files(repo: str) -> list[str]:
    """The file names of `repo` as far as they are known without downloading one: those of
    every snapshot the cache holds, and the Hub's list when it may be asked (not offline, the
    network up: the cache may hold a few of them, those asked for so far); [] when neither
    tells. For error lines only (what a repo holds instead of the file asked for)."""
    root = _repo_cache(repo)
    names: set[str] = set()
    if root is not None and (root / "snapshots").is_dir():
        names.update(p.name for s in (root / "snapshots").iterdir() if s.is_dir() for p in s.iterdir())
    if is_repo_id(repo) and not cache_only():
        try:
            from huggingface_hub import list_repo_files

            names.update(list_repo_files(cached_spelling(repo)))
        except Exception:  # noqa: BLE001 - gated, missing, no network: nothing to add
            pass
    return sorted(names)


def _interrupted(repo: str) -> str:
    """A note when the repo's cache holds a download that was interrupted (`.incomplete`)."""
    root = _repo_cache(repo)
    if root is None or not any((root / "blobs").glob("*.incomplete")):
        return ""
    return " (it holds an interrupted download of this repo: run the download again)"


def _empty_cache_note() -> str:
    """A note when the cache in use holds no model at all: the files were most likely
    downloaded into another one (HF_HOME / HF_HUB_CACHE set in another shell, another user's
    home, a service's environment), so the path looked in is the thing to see."""
    try:
        from huggingface_hub import constants

        root = Path(constants.HF_HUB_CACHE)
        if root.is_dir() and any(p.is_dir() for p in root.glob("models--*")):
            return ""
    except Exception:  # noqa: BLE001 - an unreadable cache: nothing to add
        return ""
    return f" (the cache in use, {root}, holds no model: downloaded with another HF_HOME or HF_HUB_CACHE?)"


def cached(repo: str, filename: str) -> Path | bool | None:
    """What the local Hugging Face cache knows of `filename` in `repo`: its path (the main
    revision's, else another snapshot's), False when huggingface_hub recorded that the main
    revision has no such file (the `.no_exist` marks it leaves after asking), None when the
    cache cannot tell."""
    try:
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.file_download import _CACHED_NO_EXIST
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        return None
    repo = cached_spelling(repo)
    try:
        found = try_to_load_from_cache(repo, filename)
    except Exception:  # noqa: BLE001 - a malformed repo id or cache: the cache cannot tell
        return None
    if found is _CACHED_NO_EXIST:
        return False
    if isinstance(found, str) and Path(found).is_file():
        return Path(found)
    return _other_snapshot(repo, filename)


def cache_only() -> bool:
    """True when files must come from the cache: offline mode (ours or huggingface_hub's)
    or no network."""
    return _OFFLINE.get() or _env_offline() or _hub_unreachable()


def _env_offline() -> bool:
    """huggingface_hub's offline switch, read as it reads it (HF_HUB_OFFLINE or
    TRANSFORMERS_OFFLINE = 1/on/yes/true), now or when it was imported."""
    try:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return True
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        pass
    v = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return v.strip().upper() in ("1", "ON", "YES", "TRUE")


def _download(repo: str, filename: str) -> Path:
    local = Path(repo).expanduser()
    if local.is_dir():  # a local model folder (e.g. from `moshi_mlx.convert`) stands in for a repo
        if (local / filename).is_file():
            return local / filename
        raise broken_link(local / filename) or WeightsError(f"model folder {repo} has no file {filename!r}")
    if not is_repo_id(repo):
        raise web_address(repo) or WeightsError(
            f"{repo}: no such model folder (and not a Hugging Face repo id, owner/name)"
        )
    repo = cached_spelling(repo)  # (not a second download of a repo cached under other capitals)
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface-hub is a dependency
        raise WeightsError("huggingface-hub is not installed; pass local file paths instead") from None
    try:
        if cache_only():  # no network: the cache only, at once
            return Path(hf_hub_download(repo, filename, local_files_only=True))
        return Path(hf_hub_download(repo, filename))
    except Exception as e:  # the hub raises many types; they all mean "could not get it"
        offline = _OFFLINE.get() or _env_offline()
        name = type(e).__name__
        status = _status(e)
        if status == 401 and "RepositoryNotFound" not in name:  # a token the Hub does not accept
            raise WeightsError(
                f"the Hub refused the token sent for {repo} (401 Unauthorized): log in again "
                f"(hf auth login) or fix HF_TOKEN"
            ) from None
        if status == 403 and "GatedRepo" not in name:  # huggingface_hub calls it a connection problem
            raise WeightsError(
                f"the Hub refused access to {repo} (403 Forbidden): accept its terms on the Hub and "
                f"use a token allowed to read it (hf auth login, or HF_TOKEN)"
            ) from None
        if offline or "LocalEntryNotFound" in name or "OfflineMode" in name:
            if not offline:  # the Hub failed us once: the cache only from now on, without retries
                with contextlib.suppress(Exception):
                    _REACHABLE[_hub_address()] = False
            elsewhere = _other_snapshot(repo, filename)
            if elsewhere is not None:  # cached at another revision (by commit hash, or main moved on)
                return elsewhere
            raise _broken_in_cache(repo, filename) or WeightsError(
                f"{filename} from {repo} is not in the local Hugging Face cache{_interrupted(repo)}{_no_folder_note(repo)}"
                + (" and offline mode is on" if offline else " and the Hub cannot be reached")
                + f"; download it once online ({download_command(repo, filename)}) or pass a local path"
                + _empty_cache_note()
            ) from None
        if "RepositoryNotFound" in name or "GatedRepo" in name:
            gated = "GatedRepo" in name
            raise WeightsError(
                f"Hugging Face repo {repo!r} "
                + (
                    "is gated: accept its terms on the Hub and log in (hf auth login, or HF_TOKEN)"
                    if gated
                    else "does not exist or is private (log in with hf auth login, or set HF_TOKEN, if it is yours)"
                )
                + ("" if gated else _no_folder_note(repo))
            ) from None
        if "EntryNotFound" in name:
            raise WeightsError(f"Hugging Face repo {repo!r} has no file {filename!r}") from None
        raise WeightsError(f"could not download {filename} from {repo}: {name}: {e}".splitlines()[0]) from None


def _status(e: BaseException) -> int | None:
    """The HTTP status behind a huggingface_hub error (it wraps some in LocalEntryNotFoundError)."""
    for err in (e, e.__cause__):
        code = getattr(getattr(err, "response", None), "status_code", None)
        if isinstance(code, int):
            return code
    return None


def hf_get(spec: str | os.PathLike, repo: str | None = None) -> Path:
    """Resolve `spec` to a local file (see module docstring)."""
    s = hub_file_spec(spec)
    if s.startswith("hf://"):
        parts = s[len("hf://") :].split("/")
        if len(parts) < 3:
            raise UsageError(f"bad Hub spec {s!r}: expected hf://owner/repo/path")
        if "@" in parts[1]:  # hf://owner/name@rev/path (HfFileSystem's): the cache's snapshot of rev
            name, rev = parts[1].rsplit("@", 1)
            local = _revision(s, f"{parts[0]}/{name}", rev, "/".join(parts[2:]))
            if local is not None:
                return Path(local)
            parts[1] = name
        return _download("/".join(parts[:2]), "/".join(parts[2:]))
    path = Path(s).expanduser()
    if path.exists():
        return path
    if repo is not None and os.sep not in s and "/" not in s:
        return _download(repo, s)
    raise web_address(s) or broken_link(path) or WeightsError(f"file not found: {s}")


def repo_file(repo: str, filename: str) -> Path:
    """`filename` (a path in the repo, folders included: `expresso/x.wav...`) of Hub repo `repo`,
    or of a local folder standing in for it (`hf download REPO --local-dir DIR`, then DIR), `~`
    expanded; a folder that does not exist and is no repo id is one line saying so (as an
    hf:// spec, `/abs/dir` was read as the folder `/abs`: 'model folder /abs has no file ...')."""
    local = Path(repo).expanduser()
    return _download(str(local) if local.is_dir() else repo_id(repo), filename)


def hf_get_optional(filename: str, repo: str) -> Path | None:
    """Like `hf_get(filename, repo)` but None when the file is not there to be had: the repo
    lacks it, or the files must come from the cache (offline, no network) and the cache does
    not hold it (recorded absent by huggingface_hub's `.no_exist` marks, or never fetched:
    a repo downloaded by another tool, or only some of its files)."""
    local = Path(repo).expanduser()
    if local.is_dir():
        return local / filename if present(local / filename) else None
    if is_repo_id(repo):
        hit = cached(repo, filename)
        if hit is None and cache_only():  # (a broken link in the cache is not an absent file)
            broken = _broken_in_cache(repo, filename)
            if broken is not None:
                raise broken
        if hit is False or (hit is None and cache_only()):
            return None
        if isinstance(hit, Path) and cache_only():
            return hit
    try:
        return _download(repo, filename)
    except WeightsError as e:
        if "has no file" in str(e) or "cannot be reached" in str(e):
            return None
        raise
