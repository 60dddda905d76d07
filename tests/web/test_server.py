"""The server's protocol without a browser (aiohttp's test client): refusals that keep the
session, one conversation at a time, fresh state per connection, everything freed on
disconnect, bounded lag. Mechanics use the pipeline tests' deterministic fakes; state reset
and sampling settings use the real demo model (random-tiny)."""

import asyncio
import json

import numpy as np
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient, TestServer

import moshi_mlx
from moshi_mlx.runtime.pipeline import DuplexPipeline
from moshi_mlx.runtime.transcript import PlaceholderTokenizer, Transcript
from moshi_mlx.web.conversation import Engine, to_int16
from moshi_mlx.web.protocol import HARD_MAX_MESSAGE_BYTES, Settings
from moshi_mlx.web.server import BUSY_MESSAGE, STATE, make_app

from ..runtime.fakes import FRAME, EchoGen, TagCodec

RATE = 24_000
DEFAULTS = Settings(temp=0.8, temp_text=0.7, top_k=250, top_k_text=25, top_p=0.0, top_p_text=0.0, seed=1)


class FakeModel:
    """`Model`'s surface with the pipeline tests' fakes: each generator is a fresh EchoGen
    remembering the options it was made with; one codec for the model's life, like Mimi."""

    description = "fake"
    is_demo = False

    def __init__(self, decode_s: float = 0.0):
        self.codec = TagCodec(decode_s=decode_s)
        self.generators: list[EchoGen] = []

    def generator(self, **options):
        gen = EchoGen()
        gen.options = options
        self.generators.append(gen)
        return gen

    def new_transcript(self):
        return Transcript(PlaceholderTokenizer(), pad_id=3)

    def pipeline(self, gen, *, input_rate, output_rate, max_lag_ms, on_text, **options):
        assert input_rate == output_rate == RATE
        self.codec.reset()
        return DuplexPipeline(self.codec, gen, 8, max_lag_ms=max_lag_ms, on_text=on_text, **options)


def fake_engine(**kw) -> Engine:
    return Engine(FakeModel(**kw), DEFAULTS)


def demo_engine() -> Engine:
    return Engine.from_model(moshi_mlx.load("random-tiny"), seed=299792458)


def run(coro_fn, app):
    async def main():
        async with TestClient(TestServer(app)) as client:
            return await coro_fn(client)

    return asyncio.run(main())


def tagged_block(i: int, n: int = FRAME) -> bytes:
    return to_int16(np.full(n, i / 1000.0, np.float32))


async def recv_json(ws, timeout=10.0, skip_stats=True) -> dict:
    while True:
        msg = await ws.receive(timeout=timeout)
        assert msg.type == WSMsgType.TEXT, f"expected a text message, got {msg.type} {msg.data!r:.80}"
        data = json.loads(msg.data)
        if not (skip_stats and data["type"] in ("stats", "text")):
            return data


async def recv_binary(ws, timeout=10.0, texts: list | None = None) -> bytes:
    """The next audio block; text pieces met on the way go to `texts`."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type == WSMsgType.BINARY:
            return msg.data
        assert msg.type == WSMsgType.TEXT, f"unexpected {msg.type}"
        data = json.loads(msg.data)
        assert data["type"] in ("stats", "text"), msg.data
        if data["type"] == "text" and texts is not None:
            texts.append(data["text"])


async def start(ws, rate=RATE, **settings) -> dict:
    await ws.send_str(json.dumps({"type": "start", "sample_rate": rate, "settings": settings}))
    ready = await recv_json(ws)
    assert ready["type"] == "ready", ready
    return ready


def test_refusals_keep_the_session():
    async def body(client):
        ws = await client.ws_connect("/api/ws")
        refusals = [
            ("bytes", b"\x00\x00", "before 'start'"),
            ("str", "{oops", "not valid JSON"),
            ("str", '{"type": "stop"}', "unknown message type"),
            ("str", json.dumps({"type": "start", "sample_rate": 5}), "sample_rate"),
            ("str", json.dumps({"type": "start", "sample_rate": RATE, "settings": {"temp": 99}}), "between"),
        ]
        for kind, data, match in refusals:
            await (ws.send_bytes(data) if kind == "bytes" else ws.send_str(data))
            err = await recv_json(ws)
            assert err["type"] == "error" and match in err["message"] and err["fatal"] is False, err
        ready = await start(ws, temp=0.5)
        assert ready["settings"]["temp"] == 0.5 and ready["session"] == 1
        after_start = [
            ("bytes", b"\x00\x00\x00", "whole number of int16"),
            ("bytes", b"", "empty"),
            ("bytes", b"\x00" * (2 * RATE + 2), "too large"),  # over 1 s, under the hard limit
            ("str", json.dumps({"type": "start", "sample_rate": RATE}), "twice"),
            ("str", "x" * 5000, "too large"),
        ]
        for kind, data, match in after_start:
            await (ws.send_bytes(data) if kind == "bytes" else ws.send_str(data))
            err = await recv_json(ws)
            assert err["type"] == "error" and match in err["message"] and not err["fatal"], err
        # the conversation still runs: audio in, the same length out
        for i in range(5):
            await ws.send_bytes(tagged_block(10 + i))
            out = await recv_binary(ws)
            assert len(out) == 2 * FRAME
        assert not ws.closed
        await ws.close()
        return client.app[STATE]

    st = run(body, make_app(fake_engine()))
    assert st.sessions == 1 and not st.slot.locked()
    (gen,) = st.engine.model.generators  # the client's settings reached the generator
    assert gen.options == {**DEFAULTS.as_dict(), "temp": 0.5}


def test_beyond_the_hard_limit_the_socket_is_closed():
    async def body(client):
        ws = await client.ws_connect("/api/ws", max_msg_size=0)
        await start(ws)
        try:  # the server closes (1009) as soon as it reads the frame's length
            await ws.send_bytes(b"\x00" * (HARD_MAX_MESSAGE_BYTES + 2))
        except ConnectionError:
            pass
        msg = await ws.receive(timeout=10)
        while msg.type == WSMsgType.TEXT:
            msg = await ws.receive(timeout=10)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR)
        await ws.close()
        await asyncio.sleep(0.2)
        return client.app[STATE]

    st = run(body, make_app(fake_engine()))
    assert not st.slot.locked() and st.active is None


def test_second_client_is_told_busy_and_first_goes_on():
    async def body(client):
        ws1 = await client.ws_connect("/api/ws")
        await start(ws1)
        texts = []
        for i in range(3):
            await ws1.send_bytes(tagged_block(i))
            await recv_binary(ws1, texts=texts)
        ws2 = await client.ws_connect("/api/ws")
        busy = await recv_json(ws2)
        assert busy == {"type": "busy", "message": BUSY_MESSAGE}
        msg = await ws2.receive(timeout=5)
        assert msg.type == WSMsgType.CLOSE and msg.data == 1013
        # the first conversation is undisturbed: its frames come back in order
        for i in range(3, 30):
            await ws1.send_bytes(tagged_block(i))
            out = np.frombuffer(await recv_binary(ws1, texts=texts), "<i2")
            assert len(out) == FRAME
        for _ in range(100):
            if len(texts) >= 25:
                break
            m = json.loads((await ws1.receive(timeout=10)).data)
            if m["type"] == "text":
                texts.append(m["text"])
        assert texts[:5] == [" ‹1›", " ‹2›", " ‹4›", " ‹5›", " ‹6›"]  # 0 and 3 (pad) carry no text
        await ws1.close()
        return client.app[STATE]

    st = run(body, make_app(fake_engine(), reconnect_wait_s=0.3))
    assert st.sessions == 1 and st.busy_refusals == 1


def test_disconnect_mid_sentence_frees_everything():
    engine = fake_engine(decode_s=0.02)  # work in flight when the client vanishes
    model = engine.model

    async def body(client):
        st = client.app[STATE]
        ws = await client.ws_connect("/api/ws")
        await start(ws)
        for i in range(20):
            await ws.send_bytes(tagged_block(i))
        conv = st.active
        await ws.close()  # without reading the replies
        for _ in range(100):
            if not st.slot.locked():
                break
            await asyncio.sleep(0.05)
        assert not st.slot.locked() and st.active is None
        assert all(done.is_set() for done in conv.pipe._done), "pipeline workers still running"
        # the model is reusable at once, from a fresh state
        resets = model.codec.resets
        ws = await client.ws_connect("/api/ws")
        ready = await start(ws)
        assert ready["session"] == 2 and model.codec.resets == resets + 2  # Model.pipeline, then the warm-up
        assert len(model.generators) == 2 and model.generators[1].steps == 0
        await ws.send_bytes(tagged_block(1))
        assert len(await recv_binary(ws)) == 2 * FRAME
        await ws.close()
        return st

    st = run(body, make_app(engine))
    assert st.sessions == 2 and not st.slot.locked()


def _conversation_tokens(engine, blocks, settings_list, max_lag_ms=None):
    """Each entry of settings_list: one connection fed `blocks`; returns its text pieces."""

    async def body(client):
        results = []
        for settings in settings_list:
            ws = await client.ws_connect("/api/ws")
            await start(ws, **settings)
            texts, steps = [], 0
            for b in blocks:
                await ws.send_bytes(b)
            received = 0
            while received < len(blocks) or steps < len(blocks):
                msg = await ws.receive(timeout=30)
                if msg.type == WSMsgType.BINARY:
                    received += 1
                    continue
                m = json.loads(msg.data)
                if m["type"] == "text":
                    texts.append((m["text"], m["t"]))
                elif m["type"] == "stats":
                    steps = m["steps"]
            # the last text events may follow the stats that counted their step
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 0.5
            while loop.time() < deadline:
                msg = await ws.receive(timeout=5)
                m = json.loads(msg.data)
                if m["type"] == "text":
                    texts.append((m["text"], m["t"]))
            await ws.close()
            results.append(texts)
        return results

    return run(body, make_app(engine, max_lag_ms=max_lag_ms, stats_interval_s=0.05))


def test_each_connection_is_a_fresh_conversation_and_settings_take_effect():
    engine = demo_engine()
    rng = np.random.default_rng(0)
    speech = (0.1 * rng.standard_normal(12 * FRAME)).astype(np.float32)
    blocks = [to_int16(speech[i : i + FRAME]) for i in range(0, len(speech), FRAME)]
    a, b, greedy1, greedy2, other_seed = _conversation_tokens(
        engine,
        blocks,
        [
            {"seed": 5},
            {"seed": 5},
            {"temp": 0, "temp_text": 0, "seed": 5},
            {"temp": 0, "temp_text": 0, "seed": 6},
            {"seed": 6},
        ],
    )
    assert len(a) >= 6
    assert a == b  # reconnecting replays exactly: caches, codec state and PRNG were reset
    assert greedy1 == greedy2  # greedy ignores the seed...
    assert greedy1 != a  # ...and differs from sampling: the temperature reached the model
    assert other_seed != a  # the seed reached the model
    # the same input twice in ONE conversation does not replay (state carries over): the reset is what made a == b
    (twice,) = _conversation_tokens(engine, blocks + blocks, [{"seed": 5}])
    assert twice[: len(a)] == a and [p for p, _ in twice[len(a) :]] != [p for p, _ in a]


def test_lag_stays_bounded_when_compute_falls_behind():
    """A 120 ms step for each 80 ms frame: input is skipped and late output dropped, the
    server's reported lag stays near the bound, and nothing queues up."""

    async def body(client):
        st = client.app[STATE]
        ws = await client.ws_connect("/api/ws")
        await start(ws)
        lags = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(60):  # 4.8 s in real time
            await ws.send_bytes(tagged_block(i % 900))
            await recv_binary(ws)
            await asyncio.sleep(max(0.0, t0 + (i + 1) * 0.08 - loop.time()))
            s = st.active.stats()
            if s["lag_ms"] is not None:
                lags.append(s["lag_ms"])
        conv = st.active
        stats = conv.stats()
        queued = conv.pipe._codes.qsize() + conv.pipe._tokens.qsize() + len(conv.pipe.output)
        await ws.close()
        return stats, lags, queued

    stats, lags, queued = run(body, make_app(fake_engine(), max_lag_ms=400, step_delay_s=0.12))
    assert stats["skipped"] > 5
    assert lags and max(lags) <= 400 + 50  # the pipeline's bound, one output block of slack
    assert queued <= 8


STALLING_SERVER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
from aiohttp import web
from moshi_mlx.cli.runner import run_cli
from moshi_mlx.web import server
from tests.web.test_server import fake_engine

async def busy():
    time.sleep(1.0)

async def stall(request):  # Python code of a task running when the signal arrives, awaited by the handler
    await asyncio.wait_for(busy(), 10)  # as every send of the server is
    return web.Response(text="ok")

def main(argv):
    app = server.make_app(fake_engine())
    app.router.add_get("/stall", stall)
    asyncio.run(server._run(app, "127.0.0.1", 0, ready=lambda url: print(url, flush=True)))

sys.exit(run_cli(main))
"""


def test_a_stop_signal_inside_a_handler_stops_cleanly(tmp_path):
    """SIGTERM while a request handler runs: the stop (cli/runner.py's KeyboardInterrupt) is
    raised from the event loop, not inside the handler's task, so the server shuts down as
    usual: exit 143, the one `interrupted` line, no "Task exception was never retrieved"."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    log = tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", STALLING_SERVER, str(root)], cwd=root, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        port = int(proc.stdout.readline().rstrip().rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(f"GET /stall HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            time.sleep(0.4)  # inside time.sleep(1.0) of the handler
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert text.strip().splitlines()[-1] == "interrupted (SIGTERM)", text
    assert "Traceback" not in text and "never retrieved" not in text and "destroyed" not in text, text


HAND_BACK = """
import asyncio, signal, sys
sys.path.insert(0, sys.argv[1])
from moshi_mlx.errors import STOP_SIGNALS
from moshi_mlx.web import server

got = []
for s in STOP_SIGNALS:
    signal.signal(s, lambda signum, frame: got.append(signum))

def raising_after(real):
    def swap(sig, handler):  # every change of a stop signal's handler is followed by that signal
        old = real(sig, handler)
        if sig in STOP_SIGNALS:
            signal.raise_signal(sig)
        return old
    return swap

async def main():
    moved = server._signals_through_loop()
    real = signal.signal
    signal.signal = raising_after(real)
    try:
        server._restore_signals(moved)
    finally:
        signal.signal = real

asyncio.run(main())
print(sorted(got) == sorted(STOP_SIGNALS), flush=True)
"""


def test_giving_the_signal_handlers_back_leaves_no_moment_without_one():
    """A stop signal at any moment of the hand-back reaches a Python handler (the runner's):
    asyncio's remove_signal_handler put the default back first: a SIGINT then was Python's
    KeyboardInterrupt, a SIGTERM killed the process without a word (exit -15)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", HAND_BACK, str(root)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "True", (proc.returncode, proc.stdout, proc.stderr)
