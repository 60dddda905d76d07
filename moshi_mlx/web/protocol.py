"""The WebSocket protocol between the page and the server, and the validation of everything
a client sends. Pure functions, no I/O, so every refusal is unit-testable.

Client -> server
    text   {"type": "start", "sample_rate": 48000, "settings": {...}}   once, first
    binary mono int16 little-endian PCM at the declared rate            after "start"
Server -> client
    text   {"type": "ready" | "text" | "stats" | "error" | "busy" | "end", ...}
    binary int16 PCM at the client's rate, one block per block received (lock-step, like a
           sound card's duplex callback: the browser's capture clock drives playback)

Why int16 PCM rather than Opus: the server is on localhost, where 96 kB/s each way is nothing,
so no codec dependency (libopus, a JS decoder) is needed on either side; int16 cannot carry
NaN or infinities, so a block is valid as soon as its length is even.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

# Refused (with an error message; the session goes on) above these sizes.
MAX_AUDIO_SECONDS = 1.0  # per binary message, at the declared rate
MAX_TEXT_BYTES = 4096
# Above this aiohttp closes the socket (1009) before we see the message: reading it already
# costs the memory this limit protects.
HARD_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SAMPLE_RATES = (8_000, 192_000)  # accepted range of the client's audio rate


class ProtocolError(ValueError):
    """A client message that is refused; `fatal` ones end the session."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class Settings:
    """Sampling settings a client may choose per conversation (the model's defaults otherwise)."""

    temp: float
    temp_text: float
    top_k: int
    top_k_text: int
    top_p: float
    top_p_text: float
    seed: int

    def as_dict(self) -> dict:
        return asdict(self)


# name -> (kind, low, high), bounds inclusive
SETTING_RANGES: dict[str, tuple[type, float, float]] = {
    "temp": (float, 0.0, 5.0), "temp_text": (float, 0.0, 5.0),
    "top_k": (int, 0, 1 << 20), "top_k_text": (int, 0, 1 << 20),
    "top_p": (float, 0.0, 1.0), "top_p_text": (float, 0.0, 1.0),
    "seed": (int, 0, 2**31 - 1),
}


def _number(name: str, value, kind: type, low: float, high: float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"setting {name!r} must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise ProtocolError(f"setting {name!r} must be finite")
    if kind is int:
        if float(value) != int(value):
            raise ProtocolError(f"setting {name!r} must be a whole number, got {value}")
        value = int(value)
    else:
        value = float(value)
    if not low <= value <= high:
        raise ProtocolError(f"setting {name!r} must be between {low:g} and {high:g}, got {value:g}")
    return value


def validate_settings(raw, defaults: Settings) -> Settings:
    """Client settings over `defaults`; unknown names, wrong types and out-of-range values refused."""
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        raise ProtocolError("'settings' must be an object")
    unknown = sorted(set(raw) - set(SETTING_RANGES))
    if unknown:
        raise ProtocolError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SETTING_RANGES)}")
    values = defaults.as_dict()
    for name, value in raw.items():
        values[name] = _number(name, value, *SETTING_RANGES[name])
    return Settings(**values)


@dataclass(frozen=True)
class Start:
    sample_rate: int
    settings: Settings


def parse_text(data: str, defaults: Settings, started: bool) -> Start:
    """A client text message -> the start request it must be (the only text a client sends)."""
    if len(data.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text message too large (limit {MAX_TEXT_BYTES} bytes)")
    try:
        msg = json.loads(data)
    except ValueError:
        raise ProtocolError("text message is not valid JSON") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("text message must be a JSON object with a string 'type'")
    if msg["type"] != "start":
        raise ProtocolError(f"unknown message type {msg['type'][:40]!r} (expected 'start')")
    if started:
        raise ProtocolError("'start' received twice: this connection's conversation is already running")
    extra = sorted(set(msg) - {"type", "sample_rate", "settings"})
    if extra:
        raise ProtocolError(f"unknown field(s) in 'start': {', '.join(extra)}")
    rate = msg.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise ProtocolError(f"'sample_rate' must be a whole number of Hz in {SAMPLE_RATES[0]}..{SAMPLE_RATES[1]}")
    return Start(rate, validate_settings(msg.get("settings"), defaults))


def max_audio_bytes(sample_rate: int) -> int:
    return int(MAX_AUDIO_SECONDS * sample_rate) * 2


def check_audio(data: bytes, sample_rate: int | None) -> None:
    """A binary message must follow 'start' and hold a whole number of int16 samples."""
    if sample_rate is None:
        raise ProtocolError("audio received before 'start'")
    if not data:
        raise ProtocolError("empty audio message")
    if len(data) % 2:
        raise ProtocolError("audio message is not a whole number of int16 samples")
    if len(data) > max_audio_bytes(sample_rate):
        raise ProtocolError(f"audio message too large ({len(data)} bytes; limit {max_audio_bytes(sample_rate)}, "
                            f"{MAX_AUDIO_SECONDS:g} s at {sample_rate} Hz)")


def message(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields}, allow_nan=False)
