"""What a client may send, checked without a server (moshi_mlx/web/protocol.py)."""

import json

import pytest

from moshi_mlx.web.protocol import (
    MAX_TEXT_BYTES,
    ProtocolError,
    Settings,
    check_audio,
    max_audio_bytes,
    message,
    host_refusal,
    listens_beyond_this_machine,
    origin_refusal,
    page_host,
    parse_text,
    validate_settings,
)

DEFAULTS = Settings(temp=0.8, temp_text=0.7, top_k=250, top_k_text=25, top_p=0.0, top_p_text=0.0, seed=1)


def start(**fields) -> str:
    return json.dumps({"type": "start", "sample_rate": 48000, **fields})


def test_start_with_settings_over_defaults():
    s = parse_text(start(settings={"temp": 0, "top_k_text": 5.0, "seed": 7}), DEFAULTS, started=False)
    assert s.sample_rate == 48000
    assert s.settings == Settings(temp=0.0, temp_text=0.7, top_k=250, top_k_text=5, top_p=0.0, top_p_text=0.0, seed=7)
    assert isinstance(s.settings.top_k_text, int)
    assert parse_text(start(), DEFAULTS, started=False).settings == DEFAULTS


@pytest.mark.parametrize(
    "data, match",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": 3}', "JSON object"),
        ('{"type": "hello"}', "unknown message type 'hello'"),
        (json.dumps({"type": "start"}), "sample_rate"),
        (json.dumps({"type": "start", "sample_rate": 100}), "sample_rate"),
        (json.dumps({"type": "start", "sample_rate": 48000.5}), "sample_rate"),
        (json.dumps({"type": "start", "sample_rate": True}), "sample_rate"),
        (start(extra=1), "unknown field"),
        (start(settings=[1]), "must be an object"),
        (start(settings={"temperature": 1}), "unknown setting"),
        (start(settings={"temp": "hot"}), "must be a number"),
        (start(settings={"temp": True}), "must be a number"),
        (start(settings={"temp": -0.1}), "between 0 and 5"),
        ('{"type": "start", "sample_rate": 48000, "settings": {"temp": NaN}}', "finite"),
        (start(settings={"top_k": 2.5}), "whole number"),
        (start(settings={"top_p": 1.5}), "between 0 and 1"),
        (start(settings={"seed": -1}), "between"),
        (json.dumps({"type": "start", "pad": "x" * 5000}), "too large"),
        # Python ints have no size limit: these raised OverflowError (math.isfinite, float(), :g)
        (start(settings={"seed": 10**400}), "'seed' must be between 0 and 4294967295, got an integer of about 401 "),
        (start(settings={"top_k": -(10**400)}), "'top_k' must be between 0 and 1048576, got a negative integer of "),
        (start(settings={"temp": 10**400}), "'temp' must be between"),
        (start(settings={"top_p": -(10**400)}), "'top_p' must be between"),
        ("[" * 2000 + "]" * 2000, "nested too deeply"),  # RecursionError in json.loads, under the 4 KiB limit
        ('{"type": "start", "settings": ' + "[" * 2000 + "]" * 2000 + "}", "nested too deeply"),
        (start(settings={"temp": [[[[[[[[[[1]]]]]]]]]]}), r"must be a number, got \[\[\[\[...\]\]\]\]"),
        (start(settings={"temp": "x" * 3000}), "must be a number, got 'xxxx"),
    ],
)
def test_refused_text(data, match):
    with pytest.raises(ProtocolError, match=match) as e:
        parse_text(data, DEFAULTS, started=False)
    assert not e.value.fatal


def test_refusals_are_short():
    """An error message stays short however large the value it names."""
    for settings in ({"seed": 10**400}, {"temp": "x" * 3000}, {"temp": [[[["x" * 3000]]]]}):
        with pytest.raises(ProtocolError) as e:
            parse_text(start(settings=settings), DEFAULTS, started=False)
        assert len(str(e.value)) < 120, str(e.value)
    assert len(("[" * 2000 + "]" * 2000).encode()) < MAX_TEXT_BYTES


def test_huge_but_equal_numbers_are_exact():
    """The range check compares the client's value exactly (no float rounding on the way)."""
    assert (
        parse_text(start(settings={"seed": 2**32 - 1, "top_k": 1 << 20}), DEFAULTS, started=False).settings.seed
        == 2**32 - 1
    )
    with pytest.raises(ProtocolError, match="between"):
        parse_text(start(settings={"seed": 2**32}), DEFAULTS, started=False)
    with pytest.raises(ProtocolError, match="whole number"):
        parse_text(start(settings={"seed": 0.5}), DEFAULTS, started=False)
    assert parse_text(start(settings={"seed": 7.0}), DEFAULTS, started=False).settings.seed == 7


P = 8998


@pytest.mark.parametrize(
    "origin, host, listen, accepted",
    [
        (f"http://127.0.0.1:{P}", f"127.0.0.1:{P}", "127.0.0.1", True),  # the page, as printed
        (f"http://localhost:{P}", f"localhost:{P}", "127.0.0.1", True),  # opened as localhost
        (f"http://localhost:{P}", f"127.0.0.1:{P}", "127.0.0.1", True),  # localhost and 127.0.0.1 alike
        (f"http://[::1]:{P}", f"[::1]:{P}", "::1", True),
        (f"http://LOCALHOST:{P}", f"localhost:{P}", "127.0.0.1", True),
        ("http://localhost", "localhost", "127.0.0.1", True),  # port 80 on both sides
        (f"https://localhost:{P}", f"localhost:{P}", "127.0.0.1", True),  # behind a TLS proxy
        ("http://localhost:9000", "localhost:9000", "127.0.0.1", True),  # ssh -L 9000:localhost:8998
        (f"http://192.168.1.5:{P}", f"192.168.1.5:{P}", "192.168.1.5", True),  # --host 192.168.1.5
        (f"http://192.168.1.5:{P}", f"192.168.1.5:{P}", "0.0.0.0", True),  # --host 0.0.0.0, by an address
        (f"http://mymac.local:{P}", f"mymac.local:{P}", "mymac.local", True),  # --host mymac.local
        (None, f"127.0.0.1:{P}", "127.0.0.1", True),  # not a browser
        (None, None, "127.0.0.1", True),
        ("http://evil.example", f"127.0.0.1:{P}", "127.0.0.1", False),  # another site
        (f"https://evil.example:{P}", f"127.0.0.1:{P}", "127.0.0.1", False),
        (f"http://evil.example:{P}", f"evil.example:{P}", "127.0.0.1", False),  # DNS rebinding to 127.0.0.1
        (f"http://mymac.local:{P}", f"mymac.local:{P}", "0.0.0.0", False),  # a name, not --host
        (f"http://127.0.0.1:{P + 1}", f"127.0.0.1:{P}", "127.0.0.1", False),  # another local server's page
        (f"http://192.168.1.9:{P}", f"192.168.1.5:{P}", "0.0.0.0", False),  # another machine's page
        (f"http://192.168.1.5:{P}", f"127.0.0.1:{P}", "127.0.0.1", False),
        ("http://localhost", f"localhost:{P}", "127.0.0.1", False),  # port 80 is not ours
        ("null", f"127.0.0.1:{P}", "127.0.0.1", False),  # a sandboxed frame, a file: page
        ("", f"127.0.0.1:{P}", "127.0.0.1", False),
        (f"ws://127.0.0.1:{P}", f"127.0.0.1:{P}", "127.0.0.1", False),
        (f"file://127.0.0.1:{P}", f"127.0.0.1:{P}", "127.0.0.1", False),
        (f"http://127.0.0.1:{P}/", f"127.0.0.1:{P}", "127.0.0.1", False),  # an origin has no path
        (f"http://user@127.0.0.1:{P}", f"127.0.0.1:{P}", "127.0.0.1", False),
        ("http://127.0.0.1:99999", "127.0.0.1:99999", "127.0.0.1", False),
        (f"http://127.0.0.1:{P}", None, "127.0.0.1", False),  # an origin, but no Host to match
        (f"http://127.0.0.1:{P}", "127.0.0.1:x", "127.0.0.1", False),
    ],
)
def test_origin(origin, host, listen, accepted):
    refusal = origin_refusal([] if origin is None else [origin], host, listen)
    assert (refusal is None) == accepted, refusal
    if refusal is not None:
        assert "\n" not in refusal and len(refusal) < 200


@pytest.mark.parametrize(
    "host, listen, accepted",
    [
        (f"127.0.0.1:{P}", "127.0.0.1", True),
        (f"localhost:{P}", "127.0.0.1", True),
        (f"[::1]:{P}", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.1", True),  # no port: the default one
        (f"192.168.1.5:{P}", "0.0.0.0", True),  # an IP address names no one else's site
        (f"mymac.local:{P}", "mymac.local", True),  # --host itself
        (f"MYMAC.local:{P}", "mymac.local", True),
        ("localhost:9000", "127.0.0.1", True),  # a forwarded port (ssh -L 9000:localhost:8998)
        (f"evil.example:{P}", "127.0.0.1", False),  # DNS rebinding
        ("evil.example", "127.0.0.1", False),
        (f"mymac.local:{P}", "127.0.0.1", False),
        (f"localhost.evil.example:{P}", "127.0.0.1", False),
        ("", "127.0.0.1", False),
        (f"user@127.0.0.1:{P}", "127.0.0.1", False),
        ("127.0.0.1:notaport", "127.0.0.1", False),
        (None, "127.0.0.1", True),  # no Host: not a browser (HTTP/1.0)
    ],
)
def test_host(host, listen, accepted):
    refusal = host_refusal([] if host is None else [host], listen)
    assert (refusal is None) == accepted, refusal
    if refusal is not None:
        assert "\n" not in refusal


@pytest.mark.parametrize(
    "listen, shown, beyond",
    [
        ("127.0.0.1", "127.0.0.1", False),
        ("localhost", "localhost", False),
        ("::1", "[::1]", False),
        ("127.0.0.2", "127.0.0.2", False),
        ("0.0.0.0", "127.0.0.1", True),  # a wildcard: the URL printed is the loopback one
        ("::", "[::1]", True),
        ("[::]", "[::1]", True),
        ("192.168.1.5", "192.168.1.5", True),
        ("fe80::1", "[fe80::1]", True),
        ("mymac.local", "mymac.local", True),
    ],
)
def test_the_printed_url_and_the_network_note(listen, shown, beyond):
    assert page_host(listen) == shown
    assert listens_beyond_this_machine(listen) == beyond


def test_two_hosts_are_refused():
    assert "more than one" in host_refusal([f"127.0.0.1:{P}"] * 2, "127.0.0.1")
    assert len(host_refusal(["e" * 5000], "127.0.0.1")) < 200


def test_two_origins_are_refused():
    assert "more than one" in origin_refusal([f"http://127.0.0.1:{P}"] * 2, f"127.0.0.1:{P}", "127.0.0.1")
    assert len(origin_refusal(["http://" + "e" * 5000], f"127.0.0.1:{P}", "127.0.0.1")) < 200


def test_start_twice_is_refused():
    with pytest.raises(ProtocolError, match="twice"):
        parse_text(start(), DEFAULTS, started=True)


def test_audio_checks():
    check_audio(b"\x00\x01" * 10, 48000)
    with pytest.raises(ProtocolError, match="before 'start'"):
        check_audio(b"\x00\x00", None)
    with pytest.raises(ProtocolError, match="empty"):
        check_audio(b"", 48000)
    with pytest.raises(ProtocolError, match="whole number of int16"):
        check_audio(b"\x00\x00\x00", 48000)
    limit = max_audio_bytes(48000)
    assert limit == 96000
    check_audio(b"\x00" * limit, 48000)
    with pytest.raises(ProtocolError, match="too large"):
        check_audio(b"\x00" * (limit + 2), 48000)


def test_validate_settings_none_keeps_defaults():
    assert validate_settings(None, DEFAULTS) is DEFAULTS


def test_messages_are_strict_json():
    assert json.loads(message("text", text="hi", t=0.08)) == {"type": "text", "text": "hi", "t": 0.08}
    with pytest.raises(ValueError):
        message("stats", lag_ms=float("nan"))


def test_settings_are_sampling_options():
    """The page's settings are `SamplingOptions` fields (one list of names), and the seed
    takes the whole range the rest of the package takes."""
    from dataclasses import fields

    from moshi_mlx.models.sampling import SamplingOptions
    from moshi_mlx.validation import SEED_LIMIT

    assert {f.name for f in fields(Settings)} <= set(SamplingOptions.names())
    s = parse_text(start(settings={"seed": SEED_LIMIT - 1}), DEFAULTS, started=False)
    assert s.settings.seed == SEED_LIMIT - 1
