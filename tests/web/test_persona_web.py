"""The browser's voice and role for a PersonaPlex model: sent in "start", checked by the
server (a voice is a name the server offers, never a path), and given to the conversation's
generator; a Moshi server refuses them."""

from __future__ import annotations

import json

import moshi_mlx
import pytest

from moshi_mlx.web.conversation import Engine
from moshi_mlx.web.protocol import ProtocolError, Settings, parse_text
from moshi_mlx.web.server import make_app

from .test_server import recv_json, run

VOICE = "tests/fixtures/persona/voice.wav"
SHOWN = "voice.wav"  # what the page sees of it: the file's name, not its path
DEFAULTS = Settings(temp=0.8, temp_text=0.7, top_k=250, top_k_text=25, top_p=0.0, top_p_text=0.0, seed=1)


def _start(**fields) -> str:
    return json.dumps({"type": "start", "sample_rate": 24000, **fields})


def test_protocol_prompt_fields():
    s = parse_text(_start(voice="NATF2", persona="You are Ann."), DEFAULTS, started=False, voices=("NATF2",))
    assert s.prompt == {"voice": "NATF2", "persona": "You are Ann."}
    assert parse_text(_start(), DEFAULTS, started=False, voices=("NATF2",)).prompt is None
    with pytest.raises(ProtocolError, match="unknown voice '/etc/passwd'"):
        parse_text(_start(voice="/etc/passwd"), DEFAULTS, started=False, voices=("NATF2",))
    with pytest.raises(ProtocolError, match="takes no voice or persona"):
        parse_text(_start(persona="x"), DEFAULTS, started=False, voices=None)
    with pytest.raises(ProtocolError, match="'persona' must be text"):
        parse_text(_start(persona=5), DEFAULTS, started=False, voices=())
    # valid JSON ("\\ud800") that no tokenizer takes: refused, not a fatal 1011 from SentencePiece
    with pytest.raises(ProtocolError, match="'persona' is not UTF-8 text: character 4") as e:
        parse_text(_start(persona="abc\ud800"), DEFAULTS, started=False, voices=())
    assert not e.value.fatal
    with pytest.raises(ProtocolError, match="'persona' must be at most 2000 characters, got 2001"):
        parse_text(_start(persona="a" * 2001), DEFAULTS, started=False, voices=())


def test_a_persona_conversation_starts_with_the_browsers_role():
    model = moshi_mlx.load("random-tiny-persona")
    engine = Engine.from_model(model, voice=VOICE, temp=0.0, temp_text=0.0)
    assert engine.voices == (SHOWN,)  # a demo has no presets: the command line's voice only
    seen = []
    real = model.generator

    def generator(**kw):
        gen = real(**kw)
        seen.append((kw.get("voice"), kw.get("persona"), gen.prompt.text_tokens, gen.prompt.frames.shape[1]))
        return gen

    model.generator = generator

    async def body(client):
        info = await (await client.get("/api/info")).json()
        assert info["voices"] == [SHOWN] and info["voice"] == SHOWN
        ws = await client.ws_connect("/api/ws")
        await ws.send_str(_start(persona="You are a pirate."))
        assert (await recv_json(ws))["type"] == "ready"
        await ws.close()

    run(body, make_app(engine))
    voice, persona, n_tokens, frames = seen[-1]
    assert voice == VOICE and persona == "You are a pirate."
    assert n_tokens == len(model.tokenizer.encode("<system> You are a pirate. <system>")) > 0


def test_a_moshi_server_refuses_a_persona():
    engine = Engine.from_model(moshi_mlx.load("random-tiny"))
    assert engine.voices is None

    async def body(client):
        ws = await client.ws_connect("/api/ws")
        await ws.send_str(_start(persona="You are a pirate."))
        msg = await recv_json(ws)
        await ws.close()
        return msg

    msg = run(body, make_app(engine))
    assert msg["type"] == "error" and "takes no voice or persona" in msg["message"]


def test_the_page_offers_only_the_presets_the_archive_holds(tmp_path):
    """A model folder without voices.tgz (a converted folder it was not copied to) offered all 18
    preset names, each then a fatal 1011 ('has no file voices.tgz') when a page picked it."""
    import tarfile
    from types import SimpleNamespace

    from moshi_mlx.weights.errors import WeightsError

    model = moshi_mlx.load("random-tiny-persona")
    model.files = SimpleNamespace(where=str(tmp_path))  # what the resolver found: this folder
    assert Engine.from_model(model).voices == ()
    assert Engine.from_model(model, voice=VOICE).voices == (SHOWN,)
    with tarfile.open(tmp_path / "voices.tgz", "w:gz") as tar:
        for name in ("VARM4", "NATF2"):
            tar.add("tests/fixtures/persona/voice.pt", arcname=f"voices/{name}.pt")
    assert Engine.from_model(model, voice=VOICE).voices == ("NATF2", "VARM4", SHOWN)
    data = (tmp_path / "voices.tgz").read_bytes()
    (tmp_path / "voices.tgz").write_bytes(data[: len(data) // 2])  # an interrupted download
    with pytest.raises(WeightsError, match="voices.tgz of .* cannot be read .*: copy it again"):
        Engine.from_model(model)


def test_the_pages_none_overrides_the_servers_voice_and_role():
    """The page's voice "(none)" and an emptied role box were sent as nothing, so the server's
    --voice / --persona were used: the page showed none and the model got them."""
    s = parse_text(_start(voice="", persona=""), DEFAULTS, started=False, voices=("NATF2",))
    assert s.prompt == {"voice": None, "persona": ""}
    model = moshi_mlx.load("random-tiny-persona")
    engine = Engine.from_model(model, voice=VOICE, persona="You are a pirate.")
    seen = []
    real = model.generator

    def generator(**kw):
        gen = real(**kw)
        seen.append((kw.get("voice"), kw.get("persona"), gen.prompt))
        return gen

    model.generator = generator

    async def body(client):
        for start in (_start(), _start(voice="", persona="")):
            ws = await client.ws_connect("/api/ws")
            await ws.send_str(start)
            assert (await recv_json(ws))["type"] == "ready"
            await ws.close()

    run(body, make_app(engine))
    (v1, p1, prompt1), (v2, p2, prompt2) = seen[-2:]
    assert (
        (v1, p1) == (VOICE, "You are a pirate.") and prompt1.voice is not None and prompt1.text_tokens > 0
    )  # nothing sent: the server's
    # "(none)" and no role: no voice phase, no role tokens (only the silences)
    assert v2 is None and p2 == "" and prompt2.voice is None and prompt2.text_tokens == 0


def test_the_page_sees_the_voice_files_name_not_its_path(tmp_path):
    """/api/info gave the page the server's --voice as given (a local path: the user's folders);
    now the file's name, which the page sends back to pick it (and the server finds the file)."""
    import shutil

    folder = tmp_path / "private" / "voices"
    folder.mkdir(parents=True)
    voice = folder / "ann.wav"
    shutil.copy(VOICE, voice)
    model = moshi_mlx.load("random-tiny-persona")
    engine = Engine.from_model(model, voice=str(voice), temp=0.0, temp_text=0.0)
    seen = []
    real = model.generator

    def generator(**kw):
        seen.append(kw.get("voice"))
        return real(**kw)

    model.generator = generator

    async def body(client):
        raw = await (await client.get("/api/info")).text()
        info = json.loads(raw)
        assert info["voices"] == ["ann.wav"] and info["voice"] == "ann.wav"
        assert "private" not in raw and str(tmp_path) not in raw
        ws = await client.ws_connect("/api/ws")
        await ws.send_str(_start(voice="ann.wav"))
        assert (await recv_json(ws))["type"] == "ready"
        await ws.close()

    run(body, make_app(engine))
    assert seen[-1] == str(voice)  # the name the page sent is the file
