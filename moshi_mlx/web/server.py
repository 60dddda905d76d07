"""The HTTP/WebSocket server behind `python -m moshi_mlx.local_web`.

Routes: `/` the page, `/static/*` its files (from this package: no build step, no CDN),
`/api/info` the model and its default settings, `/api/ws` the conversation (protocol.py).
One conversation at a time: the model (its Mimi streaming state, the machine's compute) serves one. A second client is told it is
busy and closed, and the first goes on undisturbed. Whatever a connection does, the engine is
handed back only once its pipeline's workers have stopped.

Who may connect (docs/web.md, "Trust model"): only this server's own page (the WebSocket
handshake's Origin, `protocol.origin_refusal`), or a program that is not a browser page; every
route answers only requests whose Host names this server (`protocol.host_refusal`: no DNS
rebinding page reads /api/info or the page's files).
Whatever a client sends or fails to read, the handler ends with one log line, never a
traceback, and the slot is freed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import signal
from pathlib import Path
from typing import Callable

from aiohttp import WSMsgType, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from ..errors import STOP_SIGNALS, UsageError
from ..runtime.pipeline import MAX_LAG_MS
from ..runtime.workers import run_in_worker
from .conversation import Conversation, Engine
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    HARD_MAX_MESSAGE_BYTES,
    MAX_AUDIO_SECONDS,
    MAX_TEXT_BYTES,
    SAMPLE_RATES,
    SETTING_RANGES,
    ProtocolError,
    check_audio,
    host_refusal,
    message,
    origin_refusal,
    page_host,
    parse_text,
)

log = logging.getLogger("moshi_mlx.web")
# A connection that has not sent 'start' by then is closed: it holds the only conversation slot.
START_TIMEOUT_S = 5.0
# A client that takes no data for this long (its tab frozen, a script that never reads) is dropped:
# every send waits for its socket buffer to drain, so it would hold the slot forever.
SEND_TIMEOUT_S = 10.0
STATIC = Path(__file__).parent / "static"
BUSY_MESSAGE = (
    "Moshi is already in a conversation with another page (one at a time). Try again when that one has ended."
)
# Content-Security-Policy: the page may load and connect to this server only, and no other
# site may frame it (frame-ancestors: default-src does not cover it). Framed, the page is this
# server's own origin, so its WebSocket passes the Origin check: a site could overlay it and
# have the user click Start (clickjacking) with the microphone its frame was allowed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self' blob:; worker-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# On every HTTP answer, errors included (docs/web.md, "Trust model"): X-Frame-Options for
# browsers without frame-ancestors; nosniff and Cross-Origin-Resource-Policy so that another
# site's <script src> or <img src> cannot load /api/info or the page's files into its own page;
# no Referer leaves the page.
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class WebState:
    """What the handlers share: the engine, its one conversation slot, and counters. Built by
    `make_app`, whose keywords (and their defaults) these are."""

    def __init__(
        self,
        engine: Engine,
        *,
        max_lag_ms: float | None,
        step_delay_s: float,
        reconnect_wait_s: float,
        stats_interval_s: float,
        host: str,
        start_timeout_s: float,
        send_timeout_s: float,
    ):
        self.engine = engine
        self.max_lag_ms = max_lag_ms
        self.step_delay_s = step_delay_s
        self.reconnect_wait_s = reconnect_wait_s
        self.stats_interval_s = stats_interval_s
        self.host = host  # the address listened on (--host): see protocol.origin_refusal
        self.start_timeout_s = start_timeout_s
        self.send_timeout_s = send_timeout_s
        self.slot = asyncio.Lock()
        self.sessions = 0  # conversations started
        self.busy_refusals = 0
        self.origin_refusals = 0
        self.host_refusals = 0
        self.active: Conversation | None = None

    async def acquire(self) -> bool:
        """The slot, waiting a little for a previous connection that is still stopping."""
        try:
            await asyncio.wait_for(self.slot.acquire(), self.reconnect_wait_s)
            return True
        except asyncio.TimeoutError:
            return False


STATE = web.AppKey("moshi_state", WebState)


def _secure(resp: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)


@web.middleware
async def _headers(request: web.Request, handler):
    """SECURITY_HEADERS on every answer but the WebSocket's, also on the errors aiohttp raises
    (a 404, a 405, the static route's 403), which bypass a plain `return`."""
    try:
        resp = await handler(request)
    except web.HTTPException as e:
        _secure(e)
        raise
    if not isinstance(resp, web.WebSocketResponse):
        _secure(resp)
    return resp


@web.middleware
async def _trusted_host(request: web.Request, handler):
    """Every route, before its handler: a Host that does not name this server is refused."""
    st = request.app[STATE]
    refusal = host_refusal(request.headers.getall(hdrs.HOST, []), st.host)
    if refusal is not None:
        st.host_refusals += 1
        log.warning("refused a request from %s for %s: %s", request.remote, one_line(request.path), one_line(refusal))
        return web.Response(
            status=403, text=f"403: {refusal}; open the page by localhost, an IP address or the --host name\n"
        )
    return await handler(request)


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def _info(request: web.Request) -> web.Response:
    st = request.app[STATE]
    e = st.engine
    return web.json_response(
        {
            "model": e.description,
            "demo": e.is_demo,
            "defaults": e.defaults.as_dict(),
            "ranges": {k: [lo, hi] for k, (_, lo, hi) in SETTING_RANGES.items()},
            "max_lag_ms": st.max_lag_ms,
            "sample_rates": list(SAMPLE_RATES),
            "max_audio_seconds": MAX_AUDIO_SECONDS,
            "max_text_bytes": MAX_TEXT_BYTES,
            # PersonaPlex: the voices a client may pick (null: the model takes no voice or persona)
            "voices": None if e.voices is None else list(e.voices),
            "voice": e.voice_name,  # a file by its name: no local path reaches the page
            "persona": e.persona,  # PersonaPlex: --persona, else the default role
        }
    )


def one_line(text: object, limit: int = 160) -> str:
    """Client-controlled or multi-line text for a single log line: whitespace collapsed,
    control characters escaped, length bounded."""
    flat = " ".join(str(text).split())
    flat = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in flat)
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class _OneLineHttpErrors(logging.Filter):
    """aiohttp logs a request its parser rejects (a 64 KB request line, thousands of headers)
    as "Error handling request" with a traceback, after answering it 400: that is the client's
    fault, so it becomes one line. Other errors keep their traceback (they are ours)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = (
                "refused a malformed HTTP request from %s: %s %s",
                (remote, exc.code, one_line(exc.message)),
            )
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# aiohttp's HTTP-level log (the `logger` of its request handler), for runners of this app.
HTTP_LOG = logging.getLogger("moshi_mlx.web.http")
HTTP_LOG.addFilter(_OneLineHttpErrors())
RUNNER_OPTIONS = {"access_log": None, "logger": HTTP_LOG, "shutdown_timeout": 5.0}


class ClientStalled(Exception):
    """The client took no data for `send_timeout_s`."""


async def _send(ws: web.WebSocketResponse, st: WebState, data: str | bytes) -> None:
    """Send, bounded in time: aiohttp waits for the socket buffer to drain, forever if the
    client has stopped reading."""
    send = ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data)
    try:
        await asyncio.wait_for(send, st.send_timeout_s)
    except asyncio.TimeoutError:
        raise ClientStalled from None


async def _close(ws: web.WebSocketResponse, request: web.Request, st: WebState, code: int, reason: bytes) -> None:
    """Close politely, or drop the connection if the client does not take the close frame."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason), st.send_timeout_s)
    except (asyncio.TimeoutError, ConnectionError):
        _drop(request)


def _drop(request: web.Request) -> bool:
    """Abort the connection (its unsent buffer is what is stuck); False if it was already closing."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    transport.abort()
    return True


async def _ws(request: web.Request) -> web.StreamResponse:
    st = request.app[STATE]
    refusal = origin_refusal(request.headers.getall(hdrs.ORIGIN, []), request.headers.get(hdrs.HOST), st.host)
    if refusal is not None:
        st.origin_refusals += 1
        log.warning("refused a WebSocket from %s: %s", request.remote, one_line(refusal))
        return web.Response(status=403, text=f"403: {refusal}; only this server's own page may connect\n")
    ws = web.WebSocketResponse(max_msg_size=HARD_MAX_MESSAGE_BYTES, heartbeat=20.0)
    await ws.prepare(request)
    try:
        if not await st.acquire():
            st.busy_refusals += 1
            log.info("busy: refused a second client (%s)", request.remote)
            await _send(ws, st, message("busy", message=BUSY_MESSAGE))
            await _close(ws, request, st, 1013, b"busy")
            return ws
        try:
            await _conversation(ws, request, st)
        finally:
            st.slot.release()
    except ClientStalled:
        if _drop(request):
            log.info("busy: dropped a second client that took no data for %g s (%s)", st.send_timeout_s, request.remote)
    except ConnectionError:  # the client left while we were writing to it
        pass
    return ws


async def _send_events(
    ws: web.WebSocketResponse, request: web.Request, st: WebState, conv: Conversation, texts: asyncio.Queue
) -> None:
    """Moshi's text as it comes, the stats a few times a second, and a fatal pipeline error."""
    loop = asyncio.get_running_loop()
    next_stats = loop.time()
    try:
        while not ws.closed:
            timeout = max(0.0, next_stats - loop.time())
            try:
                piece, t = await asyncio.wait_for(texts.get(), timeout)
                await _send(ws, st, message("text", text=piece, t=round(t, 2)))
            except asyncio.TimeoutError:
                pass
            if loop.time() >= next_stats:
                next_stats = loop.time() + st.stats_interval_s
                await _send(ws, st, message("stats", **conv.stats()))
                if conv.error is not None:
                    log.error("session %d: the pipeline failed: %s", st.sessions, one_line(repr(conv.error)))
                    await _send(ws, st, message("error", message=f"the model failed: {conv.error}", fatal=True))
                    await _close(ws, request, st, 1011, b"model failure")
                    return
    except ClientStalled:  # the receiving side then sees the connection end
        if _drop(request):
            log.info("session %d: the client took no data for %g s: dropped", st.sessions, st.send_timeout_s)
    except ConnectionError:
        pass
    except Exception as e:  # a bug of ours: this connection ends, the server goes on
        log.error("session %d: failed sending events: %s; closed (1011)", st.sessions, one_line(repr(e)))
        await _close(ws, request, st, 1011, b"internal error")


async def _receive(ws: web.WebSocketResponse, st: WebState, deadline: float | None):
    """The next message; None once the 'start' deadline has passed."""
    if deadline is None:
        return await ws.receive()
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:  # a client that keeps sending (refused messages) never lets the receive time out
        return None
    try:
        return await ws.receive(remaining)
    except asyncio.TimeoutError:
        return None


def _close_when_built(built: concurrent.futures.Future) -> None:
    """Blocking: wait for an abandoned build and close the conversation it made, if any."""
    try:
        conv = built.result()
    except BaseException:  # cancelled before it began, or it failed: nothing runs
        return
    conv.close()


async def _build(make: Callable[[], Conversation]) -> Conversation:
    """`make()` off the event loop: building a conversation runs the LM (PersonaPlex's voice
    and persona prefill, seconds for the 7B) and starts its pipeline, and meanwhile the loop
    must go on serving (/api/info, the busy answer, pings, deadlines, signals). It runs on a
    pooled worker (runtime/workers.py: its own MLX stream, a thread that never exits at
    shutdown), not asyncio's executor. Cancelled meanwhile (the client left, the server
    stops), it waits off the loop for the build to end and closes what it made before
    re-raising, so no pipeline is left running and the caller holds the slot until the model
    is free."""
    built: concurrent.futures.Future = concurrent.futures.Future()

    def work() -> None:
        if not built.set_running_or_notify_cancel():  # abandoned before it began
            return
        try:
            built.set_result(make())
        except BaseException as e:  # raised where it is awaited (the model failure path)
            built.set_exception(e)

    run_in_worker(work)
    try:
        return await asyncio.wrap_future(built)
    except asyncio.CancelledError:
        # shielded: a second cancellation (asyncio.run's at shutdown) leaves the closing to run
        # on in asyncio's executor, which asyncio.run waits for
        await asyncio.shield(asyncio.to_thread(_close_when_built, built))
        raise


async def _conversation(ws: web.WebSocketResponse, request: web.Request, st: WebState) -> None:
    loop = asyncio.get_running_loop()
    remote = request.remote
    texts: asyncio.Queue = asyncio.Queue()
    conv: Conversation | None = None
    sender: asyncio.Task | None = None
    refused = 0
    number = 0
    start_deadline = loop.time() + st.start_timeout_s
    try:
        while True:
            msg = await _receive(ws, st, None if conv is not None else start_deadline)
            if msg is None:
                log.info(
                    "closed a connection that sent no 'start' within %g s (%s, %d refused messages)",
                    st.start_timeout_s,
                    remote,
                    refused,
                )
                await _send(ws, st, message("error", message=f"no 'start' within {st.start_timeout_s:g} s", fatal=True))
                await _close(ws, request, st, 1008, b"no start")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
            try:
                if msg.type == WSMsgType.TEXT:
                    start = parse_text(msg.data, st.engine.defaults, started=conv is not None, voices=st.engine.voices)
                    st.sessions += 1
                    number = st.sessions
                    try:
                        conv = await _build(
                            lambda: Conversation(
                                st.engine,
                                start.sample_rate,
                                start.settings,
                                max_lag_ms=st.max_lag_ms,
                                step_delay_s=st.step_delay_s,
                                prompt=start.prompt,
                                on_text=lambda piece, t: loop.call_soon_threadsafe(texts.put_nowait, (piece, t)),
                            )
                        )
                    except asyncio.CancelledError:
                        log.info("session %d: stopped while starting (%s); what was built is closed", number, remote)
                        raise
                    st.active = conv
                    log.info(
                        "session %d started (%s, %d Hz, %s)",
                        number,
                        remote,
                        start.sample_rate,
                        ", ".join(f"{k}={v}" for k, v in start.settings.as_dict().items()),
                    )
                    await _send(
                        ws,
                        st,
                        message(
                            "ready",
                            session=number,
                            settings=start.settings.as_dict(),
                            model=st.engine.description,
                            max_lag_ms=st.max_lag_ms,
                        ),
                    )
                    sender = asyncio.create_task(_send_events(ws, request, st, conv, texts))
                elif msg.type == WSMsgType.BINARY:
                    check_audio(msg.data, None if conv is None else conv.sample_rate)
                    await _send(ws, st, conv.feed(msg.data))
            except ProtocolError as e:
                refused += 1
                await _send(ws, st, message("error", message=str(e), fatal=e.fatal))
                if e.fatal:
                    break
            except (ClientStalled, ConnectionError):
                raise
            except Exception as e:  # a bug of ours or the model's: this connection ends, the server goes on
                what = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                log.error(
                    "session %d: failed on a client message (%s): %s; closed (1011)", number, remote, one_line(what)
                )
                await _send(
                    ws,
                    st,
                    message(
                        "error",
                        message=f"the server failed on this message ({one_line(what)}); the connection is closed",
                        fatal=True,
                    ),
                )
                await _close(ws, request, st, 1011, b"internal error")
                break
    except ClientStalled:
        if _drop(request):  # not already dropped by the sender task
            log.info("session %d: the client took no data for %g s: dropped (%s)", number, st.send_timeout_s, remote)
    except (asyncio.CancelledError, ConnectionError):
        pass
    finally:
        if sender is not None:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        if conv is not None:
            # the workers drain and stop off the event loop; the slot is freed only after
            await asyncio.shield(asyncio.to_thread(conv.close))
            st.active = None
            s = conv.stats()
            log.info(
                "session %d ended: %d steps, %d skipped, %d trimmed, %d refused messages, last lag %s ms",
                number,
                s["steps"],
                s["skipped"],
                s["trimmed"],
                refused,
                s["lag_ms"],
            )
        if not ws.closed:
            await _close(ws, request, st, 1000, b"")


def make_app(
    engine: Engine,
    *,
    max_lag_ms: float | None = MAX_LAG_MS,
    step_delay_s: float = 0.0,
    reconnect_wait_s: float = 3.0,
    stats_interval_s: float = 0.25,
    host: str = DEFAULT_HOST,
    start_timeout_s: float = START_TIMEOUT_S,
    send_timeout_s: float = SEND_TIMEOUT_S,
) -> web.Application:
    """host: the address the server listens on, which the page's origin must name (with the
    port the request came to; localhost and loopback addresses alike)."""
    app = web.Application(middlewares=[_headers, _trusted_host])  # the 403 gets the headers too
    app[STATE] = WebState(
        engine,
        max_lag_ms=max_lag_ms,
        step_delay_s=step_delay_s,
        reconnect_wait_s=reconnect_wait_s,
        stats_interval_s=stats_interval_s,
        host=host,
        start_timeout_s=start_timeout_s,
        send_timeout_s=send_timeout_s,
    )
    app.router.add_get("/", _index)
    app.router.add_get("/api/info", _info)
    app.router.add_get("/api/ws", _ws)
    app.router.add_static("/static", STATIC)
    return app


async def _run(app: web.Application, host: str, port: int, ready=print) -> None:
    runner = web.AppRunner(app, **RUNNER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host") from None
    bound = runner.addresses[0][1] if runner.addresses else port
    ready(f"http://{page_host(host)}:{bound}/")
    moved = _signals_through_loop()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        _restore_signals(moved)


def _signals_through_loop() -> dict:
    """Run the process's stop-signal handlers (cli/runner.py's, which raise KeyboardInterrupt)
    as event-loop callbacks instead of wherever the main thread happens to be: raised inside a
    handler task, the interrupt skipped its clean-up and left "Task exception was never
    retrieved" in the log; raised from the loop, every conversation is cancelled and closed.

    Each handler is swapped for one that schedules it, in one `signal.signal` call each way,
    as cli/early.py does: `loop.remove_signal_handler` put SIG_DFL back before the runner's
    handler could be, and a SIGTERM in between killed the process without a word (-15)."""
    loop = asyncio.get_running_loop()
    moved = {}
    for sig in STOP_SIGNALS:
        handler = signal.getsignal(sig)
        if not callable(handler):  # SIG_DFL, SIG_IGN: nothing of Python's to move
            continue
        moved[sig] = handler  # recorded first: given back whatever lands next
        try:
            signal.signal(sig, functools.partial(_through_loop, loop, handler))
        except (OSError, ValueError):  # not the main thread, or an unusual platform
            del moved[sig]
    return moved


def _through_loop(loop: asyncio.AbstractEventLoop, handler: Callable, signum: int, frame) -> None:
    if loop.is_closed():  # not given back yet, but nothing left to schedule on
        handler(signum, frame)
        return
    loop.call_soon_threadsafe(handler, signum, None)  # wakes the loop's select, as asyncio's own signal handling


def _restore_signals(moved: dict) -> None:
    """Give the handlers back; each in one swap, so a signal meets one handler or the other."""
    for sig, handler in moved.items():
        signal.signal(sig, handler)


def serve(
    engine: Engine,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    max_lag_ms: float | None = MAX_LAG_MS,
    step_delay_s: float = 0.0,
    ready=print,
) -> None:
    """Serve until interrupted; `ready(url)` is called once the socket listens."""
    app = make_app(engine, max_lag_ms=max_lag_ms, step_delay_s=step_delay_s, host=host)
    asyncio.run(_run(app, host, port, ready))
