"""Saving a timed transcript: `.json` (text, words, events), `.srt` / `.vtt` subtitles, or
plain text. Files are written under a temporary name and renamed, so an existing file is
only replaced by a complete one.

Subtitle cues group consecutive words: a cue ends at an end of turn, after a sentence's
final punctuation, before a pause longer than `max_gap` seconds, or when it would exceed
`max_chars` characters or `max_seconds` seconds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError, UsageError
from ..outputs import write_text

FORMATS = (".json", ".srt", ".vtt", ".txt")


@dataclass
class Cue:
    start: float
    end: float
    text: str


def cues(words, events=(), *, max_chars: int = 42, max_seconds: float = 5.0, max_gap: float = 1.0) -> list[Cue]:
    """words: objects with text/start/end; events: objects with time (cue breaks)."""
    breaks = sorted(e.time for e in events)
    out: list[Cue] = []
    cur: list = []

    def close():
        if cur:
            out.append(Cue(cur[0].start, max(cur[-1].end, cur[0].start), " ".join(w.text for w in cur)))
            cur.clear()

    for w in words:
        if cur:
            text = " ".join(x.text for x in cur + [w])
            turn = any(cur[-1].start <= b < w.start for b in breaks)
            if (
                turn
                or w.start - cur[-1].end > max_gap
                or len(text) > max_chars
                or w.end - cur[0].start > max_seconds
                or cur[-1].text.endswith((".", "?", "!", "…"))
            ):
                close()
        cur.append(w)
    close()
    return out


def _stamp(t: float, sep: str) -> str:
    ms = int(round(max(t, 0.0) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def to_srt(cs: list[Cue]) -> str:
    return "".join(f"{i}\n{_stamp(c.start, ',')} --> {_stamp(c.end, ',')}\n{c.text}\n\n" for i, c in enumerate(cs, 1))


def to_vtt(cs: list[Cue]) -> str:
    return "WEBVTT\n\n" + "".join(f"{_stamp(c.start, '.')} --> {_stamp(c.end, '.')}\n{c.text}\n\n" for c in cs)


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """The format must be known, the folder must exist and an existing file is only
    replaced with `force`: checked before any work is done."""
    p = Path(path)
    if p.suffix.lower() not in FORMATS:
        raise UsageError(f"transcript format of {p.name!r} unknown: use one of {', '.join(FORMATS)}")
    if not p.parent.exists():
        raise OutputError(f"folder {p.parent} does not exist (for {p.name})")
    if p.is_dir():
        raise OutputError(f"{p} is a folder, not a file name")
    if p.exists() and not force:
        raise OutputError(f"{p} already exists (force=True replaces it)")
    return p


def save_transcript(path: str | os.PathLike, data: dict, words, events=(), force: bool = False) -> None:
    """data: the JSON document (text, words, events...); words/events: for subtitles.
    An existing file is replaced only with `force`."""
    p = check_output_path(path, force)
    ext = p.suffix.lower()
    if ext == ".json":
        text = json.dumps(data, ensure_ascii=False, indent=1) + "\n"
    elif ext == ".srt":
        text = to_srt(cues(words, events))
    elif ext == ".vtt":
        text = to_vtt(cues(words, events))
    else:
        text = data.get("text", "") + "\n"
    write_text(p, text)  # staged (outputs.py): an interrupted save leaves the old file whole
