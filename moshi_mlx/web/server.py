"""The HTTP/WebSocket server behind `python -m moshi_mlx.local_web`.

Routes: `/` the page, `/static/*` its files (from this package: no build step, no CDN),
`/api/info` the model and its default settings, `/api/ws` the conversation (protocol.py).
One conversation at a time: the model (its Mimi streaming state, the machine's compute) serves one. A second client is told it is
busy and closed, and the first goes on undisturbed. Whatever a connection does, the engine is
handed back only once its pipeline's workers have stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from aiohttp import WSMsgType, web

from ..errors import UsageError
from .conversation import Conversation, Engine
from .protocol import (HARD_MAX_MESSAGE_BYTES, MAX_AUDIO_SECONDS, MAX_TEXT_BYTES, SAMPLE_RATES, SETTING_RANGES,
                       ProtocolError, check_audio, message, parse_text)

log = logging.getLogger("moshi_mlx.web")
STATIC = Path(__file__).parent / "static"
BUSY_MESSAGE = ("Moshi is already in a conversation with another page (one at a time). "
                "Try again when that one has ended.")
# Content-Security-Policy: the page may load and connect to this server only.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self' blob:; connect-src 'self' blob:; worker-src 'self'; base-uri 'none'; form-action 'none'")


class WebState:
    """What the handlers share: the engine, its one conversation slot, and counters."""

    def __init__(self, engine: Engine, *, max_lag_ms: float | None, step_delay_s: float = 0.0,
                 reconnect_wait_s: float = 3.0, stats_interval_s: float = 0.25):
        self.engine = engine
        self.max_lag_ms = max_lag_ms
        self.step_delay_s = step_delay_s
        self.reconnect_wait_s = reconnect_wait_s
        self.stats_interval_s = stats_interval_s
        self.slot = asyncio.Lock()
        self.sessions = 0  # conversations started
        self.busy_refusals = 0
        self.active: Conversation | None = None

    async def acquire(self) -> bool:
        """The slot, waiting a little for a previous connection that is still stopping."""
        try:
            await asyncio.wait_for(self.slot.acquire(), self.reconnect_wait_s)
            return True
        except asyncio.TimeoutError:
            return False


STATE = web.AppKey("moshi_state", WebState)


@web.middleware
async def _headers(request: web.Request, handler):
    resp = await handler(request)
    if not isinstance(resp, web.WebSocketResponse):
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("Cache-Control", "no-cache")
    return resp


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _info(request: web.Request) -> web.Response:
    st = request.app[STATE]
    e = st.engine
    return web.json_response({
        "model": e.description, "demo": e.is_demo, "defaults": e.defaults.as_dict(),
        "ranges": {k: [lo, hi] for k, (_, lo, hi) in SETTING_RANGES.items()},
        "max_lag_ms": st.max_lag_ms, "sample_rates": list(SAMPLE_RATES),
        "max_audio_seconds": MAX_AUDIO_SECONDS, "max_text_bytes": MAX_TEXT_BYTES,
    })


async def _ws(request: web.Request) -> web.WebSocketResponse:
    st = request.app[STATE]
    ws = web.WebSocketResponse(max_msg_size=HARD_MAX_MESSAGE_BYTES, heartbeat=20.0)
    await ws.prepare(request)
    if not await st.acquire():
        st.busy_refusals += 1
        log.info("busy: refused a second client (%s)", request.remote)
        await ws.send_str(message("busy", message=BUSY_MESSAGE))
        await ws.close(code=1013, message=b"busy")
        return ws
    try:
        await _conversation(ws, st, request.remote)
    finally:
        st.slot.release()
    return ws


async def _send_events(ws: web.WebSocketResponse, st: WebState, conv: Conversation, texts: asyncio.Queue) -> None:
    """Moshi's text as it comes, the stats a few times a second, and a fatal pipeline error."""
    loop = asyncio.get_running_loop()
    next_stats = loop.time()
    while not ws.closed:
        timeout = max(0.0, next_stats - loop.time())
        try:
            piece, t = await asyncio.wait_for(texts.get(), timeout)
            await ws.send_str(message("text", text=piece, t=round(t, 2)))
        except asyncio.TimeoutError:
            pass
        if loop.time() >= next_stats:
            next_stats = loop.time() + st.stats_interval_s
            await ws.send_str(message("stats", **conv.stats()))
            if conv.error is not None:
                log.error("session %d: the pipeline failed: %r", st.sessions, conv.error)
                await ws.send_str(message("error", message=f"the model failed: {conv.error}", fatal=True))
                await ws.close(code=1011, message=b"model failure")
                return


async def _conversation(ws: web.WebSocketResponse, st: WebState, remote: str | None) -> None:
    loop = asyncio.get_running_loop()
    texts: asyncio.Queue = asyncio.Queue()
    conv: Conversation | None = None
    sender: asyncio.Task | None = None
    refused = 0
    number = 0
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.TEXT:
                    start = parse_text(msg.data, st.engine.defaults, started=conv is not None)
                    st.sessions += 1
                    number = st.sessions
                    conv = Conversation(
                        st.engine, start.sample_rate, start.settings, max_lag_ms=st.max_lag_ms,
                        step_delay_s=st.step_delay_s,
                        on_text=lambda piece, t: loop.call_soon_threadsafe(texts.put_nowait, (piece, t)))
                    st.active = conv
                    log.info("session %d started (%s, %d Hz, %s)", number, remote, start.sample_rate,
                             ", ".join(f"{k}={v}" for k, v in start.settings.as_dict().items()))
                    await ws.send_str(message("ready", session=number, settings=start.settings.as_dict(),
                                              model=st.engine.description, max_lag_ms=st.max_lag_ms))
                    sender = asyncio.create_task(_send_events(ws, st, conv, texts))
                elif msg.type == WSMsgType.BINARY:
                    check_audio(msg.data, None if conv is None else conv.sample_rate)
                    await ws.send_bytes(conv.feed(msg.data))
                elif msg.type == WSMsgType.ERROR:
                    break
            except ProtocolError as e:
                refused += 1
                await ws.send_str(message("error", message=str(e), fatal=e.fatal))
                if e.fatal:
                    break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionResetError):
                await sender
        if conv is not None:
            # the workers drain and stop off the event loop; the slot is freed only after
            await asyncio.shield(asyncio.to_thread(conv.close))
            st.active = None
            s = conv.stats()
            log.info("session %d ended: %d steps, %d skipped, %d trimmed, %d refused messages, last lag %s ms",
                     number, s["steps"], s["skipped"], s["trimmed"], refused, s["lag_ms"])
        if not ws.closed:
            await ws.close()


def make_app(engine: Engine, *, max_lag_ms: float | None = 400.0, step_delay_s: float = 0.0,
             reconnect_wait_s: float = 3.0, stats_interval_s: float = 0.25) -> web.Application:
    app = web.Application(middlewares=[_headers])
    app[STATE] = WebState(engine, max_lag_ms=max_lag_ms, step_delay_s=step_delay_s,
                          reconnect_wait_s=reconnect_wait_s, stats_interval_s=stats_interval_s)
    app.router.add_get("/", _index)
    app.router.add_get("/api/info", _info)
    app.router.add_get("/api/ws", _ws)
    app.router.add_static("/static", STATIC)
    return app


async def _run(app: web.Application, host: str, port: int, ready=print) -> None:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    ready(f"http://{shown}:{bound}/")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(engine: Engine, host: str = "127.0.0.1", port: int = 8998, *, max_lag_ms: float | None = 400.0,
          step_delay_s: float = 0.0, ready=print) -> None:
    """Serve until interrupted; `ready(url)` is called once the socket listens."""
    asyncio.run(_run(make_app(engine, max_lag_ms=max_lag_ms, step_delay_s=step_delay_s), host, port, ready))
