"""The WebSocket protocol between the page and the server, and the validation of everything
a client sends. Pure functions, no I/O, so every refusal is unit-testable.

Client -> server
    text   {"type": "start", "sample_rate": 48000, "settings": {...}}   once, first
           (+ "voice": a preset name, "persona": the role; PersonaPlex models only)
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

import ipaddress
import json
import math
import reprlib
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from ..validation import SEED_LIMIT, text

# where moshi-web listens unless told: serve(), make_app() and the --host/--port flags read these
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8998

# Refused (with an error message; the session goes on) above these sizes.
MAX_AUDIO_SECONDS = 1.0  # per binary message, at the declared rate
MAX_TEXT_BYTES = 4096
# Above this aiohttp closes the socket (1009) before we see the message: reading it already
# costs the memory this limit protects.
HARD_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
SAMPLE_RATES = (8_000, 192_000)  # accepted range of the client's audio rate
MAX_PERSONA_CHARS = 2000  # a PersonaPlex role; each token is one 80 ms prompt frame


class ProtocolError(ValueError):
    """A client message that is refused; `fatal` ones end the session."""

    def __init__(self, message: str, fatal: bool = False):
        super().__init__(message)
        self.fatal = fatal


@dataclass(frozen=True)
class Settings:
    """Sampling settings a client may choose per conversation (the model's defaults otherwise):
    `SamplingOptions` fields, under their names, within the bounds below."""

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
    "temp": (float, 0.0, 5.0),
    "temp_text": (float, 0.0, 5.0),
    "top_k": (int, 0, 1 << 20),
    "top_k_text": (int, 0, 1 << 20),
    "top_p": (float, 0.0, 1.0),
    "top_p_text": (float, 0.0, 1.0),
    "seed": (int, 0, SEED_LIMIT - 1),
}


_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 30, 30


def _show(value) -> str:
    """A client's value for an error message: short whatever its size or depth."""
    if isinstance(value, int) and value.bit_length() > 64:  # str() of a huge int is slow, format(:g) overflows
        return f"a{' negative' if value < 0 else 'n'} integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, float):
        return f"{value:g}"
    return _SHORT.repr(value)


def _number(name: str, value, kind: type, low: float, high: float):
    # Python compares ints and floats exactly, so the range is checked before any conversion:
    # float(10**400) and math.isfinite(10**400) raise OverflowError.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"setting {name!r} must be a number, got {_show(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ProtocolError(f"setting {name!r} must be finite")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ProtocolError(f"setting {name!r} must be a whole number, got {_show(value)}")
    if not low <= value <= high:
        raise ProtocolError(f"setting {name!r} must be between {_show(low)} and {_show(high)}, got {_show(value)}")
    return kind(value)


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
    prompt: dict | None = None  # {"voice": ..., "persona": ...} the client chose (PersonaPlex)


def validate_prompt(msg: dict, voices: tuple[str, ...] | None) -> dict | None:
    """The client's voice and role, for a PersonaPlex server (`voices`: the names it offers;
    None: the model takes no prompt). A voice is a name from that list, never a path; "" (the
    voice) and a blank role mean none, over the server's --voice / --persona."""
    chosen = {k: msg[k] for k in ("voice", "persona") if msg.get(k) is not None}
    if not chosen:
        return None
    if voices is None:
        raise ProtocolError("this model takes no voice or persona (PersonaPlex models do)")
    if chosen.get("voice") == "":  # the page's "(none)": no voice prompt, whatever --voice the server has
        chosen["voice"] = None
    elif "voice" in chosen and chosen["voice"] not in voices:
        raise ProtocolError(f"unknown voice {_show(chosen['voice'])}; this server offers {', '.join(voices) or 'none'}")
    if "persona" in chosen:  # the generator's own check, refused here so that the session goes on
        text("'persona'", chosen["persona"], max_chars=MAX_PERSONA_CHARS, err=ProtocolError)
    return chosen


def parse_text(data: str, defaults: Settings, started: bool, voices: tuple[str, ...] | None = None) -> Start:
    """A client text message -> the start request it must be (the only text a client sends)."""
    if len(data.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ProtocolError(f"text message too large (limit {MAX_TEXT_BYTES} bytes)")
    try:
        msg = json.loads(data)
    except ValueError:
        raise ProtocolError("text message is not valid JSON") from None
    except RecursionError:  # '[' * 2000 + ']' * 2000 fits in 4 KiB
        raise ProtocolError("text message is nested too deeply") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("text message must be a JSON object with a string 'type'")
    if msg["type"] != "start":
        raise ProtocolError(f"unknown message type {msg['type'][:40]!r} (expected 'start')")
    if started:
        raise ProtocolError("'start' received twice: this connection's conversation is already running")
    extra = sorted(set(msg) - {"type", "sample_rate", "settings", "voice", "persona"})
    if extra:
        raise ProtocolError(f"unknown field(s) in 'start': {', '.join(extra)}")
    rate = msg.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
        raise ProtocolError(f"'sample_rate' must be a whole number of Hz in {SAMPLE_RATES[0]}..{SAMPLE_RATES[1]}")
    return Start(rate, validate_settings(msg.get("settings"), defaults), validate_prompt(msg, voices))


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
        raise ProtocolError(
            f"audio message too large ({len(data)} bytes; limit {max_audio_bytes(sample_rate)}, "
            f"{MAX_AUDIO_SECONDS:g} s at {sample_rate} Hz)"
        )


def message(kind: str, **fields) -> str:
    return json.dumps({"type": kind, **fields}, allow_nan=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listens_beyond_this_machine(listen_host: str) -> bool:
    """Whether `--host` lets other machines reach the server (not localhost or a loopback
    address): moshi-web then says so, as there is no password."""
    return not _is_loopback(listen_host.strip("[]").lower())


def page_host(listen_host: str) -> str:
    """The host of the URL printed for `--host`: a wildcard address (0.0.0.0, ::) listens on
    every interface but is not one to open (Chrome refuses http://0.0.0.0, and a browser gives
    the microphone only to a localhost or https page): its loopback address instead."""
    bare = listen_host.strip("[]")
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return listen_host
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return f"[{bare}]" if ip.version == 6 else bare


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _host_port(netloc: str, default_port: int) -> tuple[str, int]:
    """'Host:port' (or '[v6]:port') -> (lowercase host without brackets, port); ValueError if malformed."""
    parts = urlsplit("//" + netloc)
    if parts.username is not None or parts.password is not None or parts.path or not parts.hostname:
        raise ValueError(netloc)
    return parts.hostname.lower(), parts.port or default_port  # .port raises ValueError on a bad port


def _names_this_server(host: str, listen_host: str) -> bool:
    """Whether a browser that reached us by the name `host` (lowercase, no brackets) is on
    this server's side: localhost, an IP address, or `--host` itself. Any other DNS name could
    be a site's own, pointed at this machine (DNS rebinding) so that its page is same-origin
    with ours. The one rule of the Origin and the Host checks."""
    return _is_ip(host) or host == "localhost" or host == listen_host.strip("[]").lower()


def host_refusal(hosts: list[str], listen_host: str) -> str | None:
    """Why an HTTP request's Host header does not name this server, or None if it does.

    hosts: the request's Host header(s); listen_host: the server's `--host`. A browser sends
    the name it looked up, and a page cannot change it: a page served by a DNS name its owner
    then pointed at 127.0.0.1 (DNS rebinding) is same-origin with whatever answers there, so it
    could read `/api/info` and the page's files, though the WebSocket's Origin check stops it
    from talking. Its requests carry that name, refused here for every route. The port is not
    compared with the one listened on: a forwarded port (`ssh -L 9000:localhost:8998`) changes
    it, and the name alone is what an attacker controls. No Host at all is not a browser
    (HTTP/1.0 programs): accepted, as a request without Origin is in `origin_refusal`.
    """
    if not hosts:
        return None
    if len(hosts) > 1:
        return "more than one Host header"
    shown = _SHORT.repr(hosts[0])
    try:
        host, _ = _host_port(hosts[0].strip(), 80)
    except ValueError:
        return f"Host {shown} is malformed"
    if not _names_this_server(host, listen_host):
        return f"Host {shown} names this server by a DNS name other than --host {listen_host}"
    return None


def origin_refusal(origins: list[str], host_header: str | None, listen_host: str) -> str | None:
    """Why a WebSocket handshake's Origin is not this server's own page, or None if it is.

    origins: the request's Origin header(s); host_header: its Host header (the address the
    browser connected to); listen_host: the server's `--host`. Browsers always send Origin
    with a WebSocket handshake, and a page cannot forge it: accepting only our page's origin is
    what stops another site open in the browser from driving the model (cross-site WebSocket
    hijacking). The page's origin must be the address this very request came to (same port,
    same host; localhost and loopback addresses count as one), and its host must be localhost,
    a loopback or other IP address, or `--host` itself: not any other DNS name, whose owner
    could point it at 127.0.0.1 (DNS rebinding) and so make its page look same-origin.

    No Origin at all is a client that is not a browser page (a script, `curl`, the tests):
    accepted, since a program on this machine can reach the port anyway, and a web page
    cannot leave the header out.
    """
    if not origins:
        return None
    if len(origins) > 1:
        return "more than one Origin header"
    origin = origins[0].strip()
    shown = _SHORT.repr(origin)
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
        return f"Origin {shown} is not a web page's origin"  # e.g. 'null': a sandboxed frame or a file: page
    default = 443 if parts.scheme == "https" else 80
    try:
        o_host, o_port = _host_port(parts.netloc, default)
    except ValueError:
        return f"Origin {shown} is malformed"
    try:
        h_host, h_port = _host_port(host_header or "", default)
    except ValueError:
        return f"Origin {shown} with no valid Host header"
    if o_port != h_port or not (o_host == h_host or _is_loopback(o_host) and _is_loopback(h_host)):
        return f"Origin {shown} is another site than this server ({_SHORT.repr(host_header)})"
    if not _names_this_server(o_host, listen_host):
        return f"Origin {shown} names this server by a DNS name other than --host {listen_host}"
    return None
