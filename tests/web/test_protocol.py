"""What a client may send, checked without a server (moshi_mlx/web/protocol.py)."""

import json

import pytest

from moshi_mlx.web.protocol import (ProtocolError, Settings, check_audio, max_audio_bytes, message, parse_text,
                                    validate_settings)

DEFAULTS = Settings(temp=0.8, temp_text=0.7, top_k=250, top_k_text=25, top_p=0.0, top_p_text=0.0, seed=1)


def start(**fields) -> str:
    return json.dumps({"type": "start", "sample_rate": 48000, **fields})


def test_start_with_settings_over_defaults():
    s = parse_text(start(settings={"temp": 0, "top_k_text": 5.0, "seed": 7}), DEFAULTS, started=False)
    assert s.sample_rate == 48000
    assert s.settings == Settings(temp=0.0, temp_text=0.7, top_k=250, top_k_text=5, top_p=0.0, top_p_text=0.0, seed=7)
    assert isinstance(s.settings.top_k_text, int)
    assert parse_text(start(), DEFAULTS, started=False).settings == DEFAULTS


@pytest.mark.parametrize("data, match", [
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
])
def test_refused_text(data, match):
    with pytest.raises(ProtocolError, match=match) as e:
        parse_text(data, DEFAULTS, started=False)
    assert not e.value.fatal


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
