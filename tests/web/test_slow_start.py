"""A conversation that takes long to start (PersonaPlex's voice and persona prefill through
the LM: seconds for the 7B) is built off the event loop: meanwhile the server answers
/api/info, its page and a second client (busy), and a client that leaves, or a server that
stops, during the start leaves no pipeline running and the slot free.

The slow model's generator waits for the test to release it (at most BUILD_WAIT_S): an
answer that arrives before the release arrived while the start was in progress, whatever the
machine's load. A server that builds on the loop starves the test's own coroutine (same
loop) until the wait runs out, which the tests detect (`released` is False)."""

import asyncio
import json
import threading

import pytest

from moshi_mlx.web.conversation import Engine
from moshi_mlx.web.server import BUSY_MESSAGE, STATE, _build, make_app

from ..runtime.fakes import FRAME
from .test_server import DEFAULTS, RATE, FakeModel, recv_binary, recv_json, tagged_block
from .test_untrusted import _frame, assert_clean, closed_with, lines, raw_websocket, run, start

BUILD_WAIT_S = 15.0  # how long the generator waits for the test; generous for a loaded machine


class SlowStart(FakeModel):
    """FakeModel whose first generator takes until the test sets `release`; it keeps the
    pipelines it made."""

    def __init__(self):
        super().__init__()
        self.building = threading.Event()  # set once a generator is being made
        self.release = threading.Event()
        self.released: bool | None = None  # None while building; True: the test released it, False: timed out
        self.pipes = []

    def generator(self, **options):
        if not self.generators:
            self.building.set()
            self.released = self.release.wait(BUILD_WAIT_S)
        return super().generator(**options)

    def pipeline(self, gen, **kw):
        pipe = super().pipeline(gen, **kw)
        self.pipes.append(pipe)
        return pipe


START = json.dumps({"type": "start", "sample_rate": RATE})


async def building(model: SlowStart) -> None:
    assert await asyncio.to_thread(model.building.wait, 30), "the server never began building"


def test_the_server_answers_while_a_conversation_starts(logs):
    """While the first client's start is in progress: /api/info, the page, and the busy
    answer to a second client all arrive; then the first client gets `ready` and talks."""
    model = SlowStart()
    app = make_app(Engine(model, DEFAULTS), reconnect_wait_s=0.2)

    async def body(port, http):
        url = f"http://127.0.0.1:{port}"
        ws1 = await http.ws_connect(f"{url}/api/ws")
        await ws1.send_str(START)
        await building(model)
        answered = {}
        async with http.get(f"{url}/api/info") as r:
            answered["info"] = (r.status, (await r.json())["model"], model.released)
        async with http.get(f"{url}/") as r:
            answered["page"] = (r.status, model.released)
        ws2 = await http.ws_connect(f"{url}/api/ws")
        busy = await recv_json(ws2)
        answered["busy"] = (busy, await closed_with(ws2), model.released)
        model.release.set()
        ready = await recv_json(ws1)
        assert ready["type"] == "ready" and ready["session"] == 1, ready
        await ws1.send_bytes(tagged_block(1))
        assert len(await recv_binary(ws1)) == 2 * FRAME
        await ws1.close()
        return answered

    answered = run(app, body)
    # each answer came while the generator was still waiting (released None), not after it timed out
    assert answered == {
        "info": (200, "fake", None),
        "page": (200, None),
        "busy": ({"type": "busy", "message": BUSY_MESSAGE}, 1013, None),
    }, answered
    assert model.released is True
    st = app[STATE]
    assert st.sessions == 1 and st.busy_refusals == 1 and not st.slot.locked()
    assert len(lines(logs, "busy: refused a second client")) == 1
    assert_clean(logs)


def test_a_client_that_leaves_during_the_start_leaves_nothing_running(logs):
    """The client sends `start` and drops the connection while the conversation is being
    built: the slot stays taken until the build ends (the model is not shared: a client
    meanwhile is told busy), then the conversation built is closed (its pipeline's workers
    have returned), the slot is free and the next client talks from a fresh state."""
    model = SlowStart()
    app = make_app(Engine(model, DEFAULTS), reconnect_wait_s=0.2)

    async def body(port, http):
        st = app[STATE]
        url = f"http://127.0.0.1:{port}/api/ws"
        _, writer = await raw_websocket(port)
        writer.write(_frame(1, START.encode()))
        await writer.drain()
        await building(model)
        writer.transport.abort()  # gone, without a closing handshake
        meanwhile = await http.ws_connect(url)
        busy = (await recv_json(meanwhile))["type"], await closed_with(meanwhile)
        left_during_build = model.released
        model.release.set()
        for _ in range(200):
            if model.pipes and not st.slot.locked():
                break
            await asyncio.sleep(0.05)
        (pipe,) = model.pipes
        assert not st.slot.locked() and st.active is None
        assert all(done.is_set() for done in pipe._done) and not pipe._running, "the pipeline still runs"
        ws = await http.ws_connect(url)
        ready = await start(ws)
        assert ready["type"] == "ready" and ready["session"] == 2, ready
        await ws.send_bytes(tagged_block(1))
        assert len(await recv_binary(ws)) == 2 * FRAME
        assert model.codec.resets == 4  # its own fresh pipeline: Model.pipeline's reset, then its warm-up's
        await ws.close()
        return left_during_build, busy

    left_during_build, busy = run(app, body)
    assert left_during_build is None, "the client could only leave after the start had ended"
    assert busy == ("busy", 1013)
    assert not app[STATE].slot.locked()
    assert len(lines(logs, "session 1 ended")) == 1 and len(lines(logs, "session 2 ended")) == 1
    assert_clean(logs)


def test_a_start_cancelled_while_building_closes_what_it_built():
    """The awaiting task is cancelled (the server stops) while the worker builds: the task
    ends only once the build has ended and what it made is closed, so the slot its caller
    holds is freed only then; a second cancellation leaves the closing to finish anyway."""

    class Built:
        def __init__(self):
            self.closed = threading.Event()

        def close(self):
            self.closed.set()

    for cancels in (1, 2):
        entered, release, made = threading.Event(), threading.Event(), []

        def make():
            entered.set()
            assert release.wait(BUILD_WAIT_S)
            made.append(Built())
            return made[-1]

        async def main():
            task = asyncio.create_task(_build(make))
            assert await asyncio.to_thread(entered.wait, 30)
            task.cancel()
            await asyncio.sleep(0.1)
            assert not task.done()  # waiting for the build, off the loop
            if cancels == 2:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            release.set()
            if cancels == 1:
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert made[0].closed.is_set()  # closed before the task ended

        asyncio.run(main())  # waits for asyncio's executor, where a twice-cancelled closing runs on
        assert len(made) == 1 and made[0].closed.is_set(), cancels


def test_a_failing_build_is_raised_where_it_is_awaited():
    def make():
        raise RuntimeError("boom")

    async def main():
        with pytest.raises(RuntimeError, match="boom"):
            await _build(make)

    asyncio.run(main())


SLOW_SERVER = """
import asyncio, json, logging, os, sys, time
sys.path.insert(0, sys.argv[1])
from moshi_mlx.cli.runner import run_cli
from moshi_mlx.web import server
from moshi_mlx.web.conversation import Engine
from tests.web.test_server import DEFAULTS, FakeModel

class Slow(FakeModel):
    pipes = []

    def generator(self, **options):  # waits for the test's file, at most 15 s
        print("building", flush=True)
        deadline = time.monotonic() + 15
        while not os.path.exists(sys.argv[2]) and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().generator(**options)

    def pipeline(self, gen, **kw):
        self.pipes.append(super().pipeline(gen, **kw))
        return self.pipes[-1]

def main(argv):
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)  # as moshi-web's
    app = server.make_app(Engine(Slow(), DEFAULTS))
    try:
        asyncio.run(server._run(app, "127.0.0.1", 0, ready=lambda url: print(url, flush=True)))
    finally:  # before the CLI runner's own clean-up (pipeline.abort_all): still running?
        print(json.dumps([p._running or not all(d.is_set() for d in p._done) for p in Slow.pipes]), flush=True)

sys.exit(run_cli(main))
"""


def test_a_stop_signal_during_the_start_closes_what_is_built(tmp_path):
    """SIGTERM while the conversation is being built: the server waits for the build, closes
    the pipeline it made before the event loop is gone, logs it in one line, and exits as
    usual (143, the one `interrupted` line, no traceback)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    release, log = tmp_path / "release", tmp_path / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_SERVER, str(root), str(release)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )

    async def client():
        import aiohttp

        url = (await asyncio.to_thread(proc.stdout.readline)).strip()
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(url + "api/ws")
            await ws.send_str(START)
            assert (await asyncio.to_thread(proc.stdout.readline)).strip() == "building"
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            release.touch()
            got = []
            while True:
                msg = await ws.receive(timeout=30)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return got
                got.append(json.loads(msg.data)["type"])

    try:
        got = asyncio.run(asyncio.wait_for(client(), 60))
        assert proc.wait(30) == 143
        still_running = json.loads(proc.stdout.read().strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "ready" not in got, got
    assert still_running == [False], "the pipeline built during the stop was left running"
    assert len([line for line in text.splitlines() if "stopped while starting" in line]) == 1, text
    assert text.strip().splitlines()[-1] == "interrupted (SIGTERM)", text
    assert "Traceback" not in text and "never retrieved" not in text and "destroyed" not in text, text
