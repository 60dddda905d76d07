"""What a client the server does not trust can do to it, over real loopback sockets (raw HTTP
and WebSocket where aiohttp's client would refuse to misbehave): only this server's own page
(or a non-browser client, which sends no Origin) may open a conversation; a connection that
never starts or never reads is closed and frees the slot; no message kills the handler; and
the log has one line per incident and no traceback. Bounded: a few dozen connections, each
test a few seconds at most."""

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import zlib

import aiohttp
import numpy as np
import pytest
from aiohttp import WSMsgType

from moshi_mlx.web.conversation import Engine
from moshi_mlx.web.server import STATE, _run, make_app

from ..runtime.fakes import FRAME
from .test_server import DEFAULTS, RATE, FakeModel, fake_engine, recv_binary, recv_json, tagged_block


def assert_clean(caplog) -> None:
    """No traceback, no multi-line record: each incident is one line."""
    for r in caplog.records:
        assert r.exc_info is None and not r.exc_text and not r.stack_info, (r.name, r.getMessage())
        assert "\n" not in r.getMessage() and "Traceback" not in r.getMessage(), r.getMessage()


def lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


@contextlib.asynccontextmanager
async def serving(app):
    """The real server (`_run`: the CLI's runner options and logging) on 127.0.0.1, a free port."""
    urls = []
    task = asyncio.create_task(_run(app, "127.0.0.1", 0, urls.append))
    while not urls:
        await asyncio.sleep(0.01)
        if task.done():
            task.result()
    try:
        yield int(urls[0].rstrip("/").rsplit(":", 1)[1])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run(app, body):
    async def main():
        async with serving(app) as port:
            async with aiohttp.ClientSession() as http:
                return await asyncio.wait_for(body(port, http), 60)

    return asyncio.run(main())


async def start(ws, **settings) -> dict:
    await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "settings": settings}))
    return await recv_json(ws)


async def closed_with(ws, timeout=10.0) -> int | None:
    """Read until the server closes; its close code."""
    while True:
        msg = await ws.receive(timeout=timeout)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
            return ws.close_code


# ---------------------------------------------------------------------------- who may connect


def test_only_this_servers_page_may_open_a_websocket(logs):
    """The page's own origin (127.0.0.1 or localhost, the server's port) and a client without
    an Origin header reach `ready`; another site, another port, a DNS name pointed at
    127.0.0.1 (rebinding) and a sandboxed page ('null') get 403 at the handshake, with one log
    line each, and take nothing (the next client is not told busy)."""

    async def body(port, http):
        url = f"http://127.0.0.1:{port}/api/ws"
        accepted = [
            {"Origin": f"http://127.0.0.1:{port}"},
            {"Origin": f"http://localhost:{port}"},  # the page opened as localhost, the socket to 127.0.0.1
            {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"},
            {},  # not a browser: no Origin
        ]
        refused = [
            {"Origin": "http://evil.example"},
            {"Origin": f"http://evil.example:{port}"},
            {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"},  # DNS rebinding
            {"Origin": f"http://127.0.0.1:{port + 1}"},  # another local server's page
            {"Origin": "null"},
            {"Origin": f"http://127.0.0.1:{port}/"},
        ]
        for i, headers in enumerate(accepted + refused):
            try:
                ws = await http.ws_connect(url, headers=headers)
            except aiohttp.WSServerHandshakeError as e:
                assert headers in refused and e.status == 403, (headers, e.status)
                continue
            assert headers in accepted, headers
            ready = await start(ws)
            assert ready["type"] == "ready", (headers, ready)
            await ws.close()
        # a refusal says why, in the body
        async with http.get(
            url,
            headers={
                "Origin": "http://evil.example",
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            },
        ) as r:
            assert r.status == 403 and "another site" in await r.text()

    app = make_app(fake_engine(), reconnect_wait_s=2.0)
    run(app, body)
    st = app[STATE]
    # the DNS-rebinding handshake (Host evil.example) is refused by the Host check, before its Origin is read
    assert st.sessions == 4 and st.busy_refusals == 0 and st.origin_refusals == 6 and st.host_refusals == 1
    refusals = lines(logs, "refused a WebSocket")
    assert len(refusals) == 6 and "evil.example" in refusals[0], refusals
    assert len(lines(logs, "refused a request from 127.0.0.1 for /api/ws: Host 'evil.example:")) == 1
    assert_clean(logs)


def test_host_flag_changes_the_accepted_origin(logs):
    """--host mymac.local: its page (http://mymac.local:PORT) is accepted; with the default
    host the same name is a DNS name that could point anywhere, and is refused."""

    async def body(port, http):
        headers = {"Origin": f"http://mymac.local:{port}", "Host": f"mymac.local:{port}"}
        try:
            ws = await http.ws_connect(f"http://127.0.0.1:{port}/api/ws", headers=headers)
        except aiohttp.WSServerHandshakeError as e:
            return e.status
        ready = await start(ws)
        await ws.close()
        return ready["type"]

    assert run(make_app(fake_engine(), host="mymac.local"), body) == "ready"
    assert run(make_app(fake_engine()), body) == 403
    assert len(lines(logs, "Host 'mymac.local:")) == 1  # refused by its Host, before its Origin is read
    assert_clean(logs)


def test_every_route_answers_only_requests_that_name_this_server(logs):
    """DNS rebinding: a site points its own name at 127.0.0.1, and its page, same-origin with
    whatever answers there, reads /api/info or the page's files. Every route refuses a Host
    naming another DNS name (403, one log line); localhost, loopback and other IP addresses,
    and the --host name are answered, on any port (an ssh tunnel's is another)."""
    paths = ("/api/info", "/", "/static/app.js", "/static/style.css", "/no-such-page")

    async def body(port, http):
        got = {}
        for host in (
            "evil.example",
            f"evil.example:{port}",
            f"localhost.evil.example:{port}",
            "",  # malformed
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"[::1]:{port}",
            "localhost:9000",
            f"mymac.local:{port}",
            f"MyMac.Local:{port}",
        ):
            for path in paths:
                async with http.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host}) as r:
                    got[host, path] = r.status, await r.text()
        return got

    got = run(make_app(fake_engine(), host="mymac.local"), body)
    for (host, path), (status, text) in got.items():
        if host.split(":")[0] in ("evil.example", "localhost.evil.example", ""):
            assert status == 403 and ("names this server by a DNS name" in text or "malformed" in text), (host, path)
            assert "Moshi" not in text and "model" not in text.split(";")[0], (host, path)
        else:
            assert status == (404 if path == "/no-such-page" else 200), (host, path, status, text)
    assert '"model"' in got["localhost:9000", "/api/info"][1]
    refused = lines(logs, "refused a request from 127.0.0.1 for /")
    assert len(refused) == 4 * len(paths), refused
    assert any("for /api/info: Host 'evil.example'" in line for line in refused), refused
    assert_clean(logs)

    # the default --host (127.0.0.1): the name mymac.local is any DNS name, refused
    logs.clear()
    app = make_app(fake_engine())

    async def one(port, http):
        async with http.get(f"http://127.0.0.1:{port}/api/info", headers={"Host": f"mymac.local:{port}"}) as r:
            return r.status

    assert run(app, one) == 403 and app[STATE].host_refusals == 1
    assert_clean(logs)


# ------------------------------------------------------------------ connections that hold the slot


def test_a_connection_that_never_starts_is_closed(logs):
    """Silent, or sending only refused messages: closed (fatal error, 1008) at the deadline,
    and the next client gets a conversation, not `busy`."""

    async def body(port, http):
        url = f"http://127.0.0.1:{port}/api/ws"
        loop = asyncio.get_running_loop()
        silent = await http.ws_connect(url)
        t0 = loop.time()
        err = await recv_json(silent)
        assert err["type"] == "error" and err["fatal"] and "no 'start'" in err["message"], err
        assert await closed_with(silent) == 1008
        assert loop.time() - t0 < 5.0  # 0.5 s, with room for a loaded machine
        chatty = await http.ws_connect(url)  # refusals do not extend the deadline
        t0 = loop.time()
        while True:
            await chatty.send_str('{"type": "hello"}')
            msg = json.loads((await chatty.receive(timeout=5)).data)
            if msg["fatal"]:
                break
            assert loop.time() - t0 < 5.0
        assert await closed_with(chatty) == 1008
        ws = await http.ws_connect(url)
        assert (await start(ws))["type"] == "ready"
        await ws.close()

    app = make_app(fake_engine(), start_timeout_s=0.5, reconnect_wait_s=0.2)
    run(app, body)
    assert app[STATE].busy_refusals == 0 and not app[STATE].slot.locked()
    assert len(lines(logs, "sent no 'start' within 0.5 s")) == 2
    assert_clean(logs)


def _frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = np.frombuffer(payload, np.uint8) ^ np.resize(np.frombuffer(mask, np.uint8), n)
    return head + mask + masked.tobytes()


async def raw_websocket(port: int, rcvbuf: int | None = None, extensions: str | None = None):
    """A handshake by hand; a small receive buffer makes 'not reading' fill up quickly."""
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else ""
    writer.write(
        f"GET /api/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def test_a_client_that_stops_reading_is_dropped(logs):
    """It sends audio and never reads the answers: once the socket buffers are full the
    server's sends stall, and after the send timeout it drops the connection, so the slot
    is free for the next client."""

    async def body(port, http):
        st = app[STATE]
        _, writer = await raw_websocket(port, rcvbuf=4096)
        writer.write(_frame(1, json.dumps({"type": "start", "sample_rate": RATE}).encode()))
        block = _frame(2, bytes(2 * RATE))  # 1 s of silence, the largest block allowed
        dropped = None
        for sent in range(1, 2001):  # at most 96 MB; about 11 MB fill the buffers here
            try:
                writer.write(block)
                await asyncio.wait_for(writer.drain(), 5)
            except (ConnectionError, asyncio.TimeoutError) as e:
                dropped = e
                break
        assert isinstance(dropped, ConnectionError), f"not dropped after {sent} blocks: {dropped!r}"
        writer.close()
        for _ in range(100):
            if not st.slot.locked():
                break
            await asyncio.sleep(0.05)
        assert not st.slot.locked() and st.active is None
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/api/ws")
        assert (await start(ws))["type"] == "ready"
        await ws.send_bytes(tagged_block(1))
        assert len(await recv_binary(ws)) == 2 * FRAME
        await ws.close()

    app = make_app(fake_engine(), send_timeout_s=0.5)
    run(app, body)
    assert len(lines(logs, "took no data for 0.5 s: dropped")) == 1
    assert_clean(logs)


# ------------------------------------------------------------------------ messages that killed it


def test_huge_numbers_and_deep_nesting_are_refused_and_the_session_goes_on(logs):
    """Settings with 400-digit integers (OverflowError in the range check) and JSON nested
    2000 deep (RecursionError in json.loads), before and during a conversation: each is a
    non-fatal `error`, and the conversation still answers."""
    huge = 10**400

    def start_msg(settings) -> str:
        return json.dumps({"type": "start", "sample_rate": RATE, "settings": settings})

    deep = "[" * 2000 + "]" * 2000
    before = [
        (start_msg({"seed": huge + 1}), "'seed' must be between"),
        (start_msg({"top_k": -huge}), "'top_k' must be between"),
        (start_msg({"temp": huge}), "'temp' must be between"),
        (deep, "nested too deeply"),
        (
            '{"type": "start", "sample_rate": 24000, "settings": {"temp": ' + "[" * 500 + "]" * 500 + "}}",
            "must be a number",
        ),
    ]

    async def body(port, http):
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/api/ws")
        for data, match in before:
            assert len(data.encode()) <= 4096
            await ws.send_str(data)
            err = await recv_json(ws)
            assert err["type"] == "error" and not err["fatal"] and match in err["message"], err
        assert (await start(ws))["type"] == "ready"
        for data in (deep, start_msg({"seed": huge})):
            await ws.send_str(data)
            err = await recv_json(ws)
            assert err["type"] == "error" and not err["fatal"], err
        for i in range(3):
            await ws.send_bytes(tagged_block(i))
            assert len(await recv_binary(ws)) == 2 * FRAME
        await ws.close()

    run(make_app(fake_engine()), body)
    ended = lines(logs, "session 1 ended")
    assert len(ended) == 1 and "7 refused messages" in ended[0], ended
    assert_clean(logs)


class FailingOnce(FakeModel):
    """Its first generator raises, a multi-line message (a bug anywhere behind a message)."""

    def generator(self, **options):
        if not self.generators:
            self.generators.append(None)
            raise RuntimeError("boom\nsecond line")
        return super().generator(**options)


def test_an_unexpected_error_is_one_line_and_close_1011(logs):
    async def body(port, http):
        url = f"http://127.0.0.1:{port}/api/ws"
        ws = await http.ws_connect(url)
        err = await start(ws)
        assert err["type"] == "error" and err["fatal"] and "RuntimeError: boom second line" in err["message"], err
        assert await closed_with(ws) == 1011
        ws = await http.ws_connect(url)  # the server and the slot survive
        assert (await start(ws))["type"] == "ready"
        await ws.close()

    app = make_app(Engine(FailingOnce(), DEFAULTS), reconnect_wait_s=2.0)
    run(app, body)
    failed = lines(logs, "failed on a client message")
    assert len(failed) == 1 and "RuntimeError: boom second line" in failed[0] and "(1011)" in failed[0], failed
    assert app[STATE].busy_refusals == 0
    assert_clean(logs)


# ------------------------------------------------------------------------------ HTTP-level noise


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # a 64 KB request line
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 65536 + b"\r\n\r\n",  # a 64 KB header
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    ],
    ids=["request-line", "5000-headers", "header-64k", "malformed-header"],
)
def test_a_request_the_parser_rejects_is_400_and_one_log_line(request_bytes, logs):
    async def body(port, http):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request_bytes)
            await writer.drain()
        except ConnectionError:  # the server may answer and close before reading it all
            pass
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.") and answer.split(b" ", 2)[1] == b"400", answer[:80]
        async with http.get(f"http://127.0.0.1:{port}/api/info") as r:  # and the server goes on
            assert r.status == 200

    run(make_app(fake_engine()), body)
    refused = lines(logs, "refused a malformed HTTP request from 127.0.0.1: 400")
    assert len(refused) == 1, [r.getMessage() for r in logs.records]
    assert len(refused[0]) < 300
    assert_clean(logs)


# ------------------------------------------------------------------ what a foreign page may load


def test_every_answer_forbids_framing_and_foreign_loads(logs):
    """Another site may not frame the page (framed, it is this server's own origin, so its
    WebSocket passes the Origin check: clickjacking the Start button), nor load /api/info or
    the files into its own page: every HTTP answer, errors included (404, 405, the static
    route's 403 and the Host refusal), carries frame-ancestors 'none', X-Frame-Options DENY,
    nosniff, Cross-Origin-Resource-Policy same-origin and no-referrer; none allows CORS."""
    expected = {
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Referrer-Policy": "no-referrer",
    }

    async def body(port, http):
        got = {}
        evil = {"Origin": "http://evil.example"}
        for method, path, headers in [
            ("GET", "/", {}),
            ("GET", "/static/app.js", {}),
            ("GET", "/api/info", evil),
            ("GET", "/no-such-page", {}),  # 404
            ("POST", "/api/info", evil),  # 405
            ("OPTIONS", "/api/info", {**evil, "Access-Control-Request-Method": "GET"}),
            ("GET", "/static/", {}),  # 403: no directory listing
            ("GET", "/static/%2e%2e/server.py", {}),  # 404: no way out of static/
            ("GET", "/api/info", {"Host": "evil.example"}),  # 403: DNS rebinding
        ]:
            async with http.request(method, f"http://127.0.0.1:{port}{path}", headers=headers) as r:
                got[method, path, tuple(headers)] = r.status, r.headers
        return got

    got = run(make_app(fake_engine()), body)
    statuses = [status for status, _ in got.values()]
    assert statuses == [200, 200, 200, 404, 405, 405, 403, 404, 403], statuses
    for key, (status, headers) in got.items():
        assert "frame-ancestors 'none'" in headers.get("Content-Security-Policy", ""), (key, status, headers)
        for name, value in expected.items():
            assert headers.get(name) == value, (key, status, name, headers)
        assert not [h for h in headers if h.lower().startswith("access-control-")], (key, headers)
    assert_clean(logs)


def test_a_wildcard_host_prints_a_url_a_browser_can_open(logs):
    """--host 0.0.0.0 listens on every interface; the URL printed is http://127.0.0.1:PORT/
    (http://0.0.0.0 is refused by Chrome and is no secure context for the microphone), and
    the page and its WebSocket answer there."""

    async def main():
        urls = []
        task = asyncio.create_task(_run(make_app(fake_engine(), host="0.0.0.0"), "0.0.0.0", 0, urls.append))
        while not urls:
            await asyncio.sleep(0.01)
            if task.done():
                task.result()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(urls[0]) as r:
                    assert r.status == 200
                ws = await http.ws_connect(urls[0] + "api/ws", headers={"Origin": urls[0].rstrip("/")})
                assert (await start(ws))["type"] == "ready"
                await ws.close()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        return urls[0]

    url = asyncio.run(main())
    assert url.startswith("http://127.0.0.1:") and not url.endswith(":0/"), url
    assert_clean(logs)


def _deflated(opcode: int, payload: bytes) -> bytes:
    """A masked frame with RSV1 set: its payload raw-deflated (permessage-deflate)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = (comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH))[:-4]
    frame = _frame(opcode, data)
    return bytes([frame[0] | 0x40]) + frame[1:]


MALFORMED_FRAMES = {
    "reserved bit (RSV2)": ([bytes([0xA1]) + _frame(1, b"{}")[1:]], 1002),
    "reserved opcode": ([_frame(3, b"x")], 1002),
    "text not utf-8": ([_frame(1, b"\xff\xfe")], 1007),
    "ping over 125 bytes": ([_frame(9, b"x" * 200)], 1002),
    "continuation of nothing": ([_frame(0, b"x")], 1002),
    "close code 999": ([_frame(8, struct.pack(">H", 999))], 1002),
    "2**62 byte length": ([bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 62) + os.urandom(4)], 1009),
    "6 MB in two fragments": ([bytes([0x02]) + _frame(2, bytes(3 << 20))[1:], _frame(0, bytes(3 << 20))], 1009),
    "deflate bomb 64 MB": ([_deflated(2, bytes(64 << 20))], 1009),
}


def test_malformed_and_oversized_frames_close_the_socket_and_free_the_slot(logs):
    """Frames a browser never sends: each closes the socket with its RFC 6455 code (1009 for
    a message over the hard limit, however fragmented or compressed: a deflate bomb is not
    inflated past the limit), no traceback in the log, and the next client starts."""

    async def one(port, frames):
        reader, writer = await raw_websocket(port, extensions="permessage-deflate")
        writer.writelines(frames)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        got = b""
        with contextlib.suppress(ConnectionError):
            while len(got) < 4:
                more = await asyncio.wait_for(reader.read(64), 10)
                if not more:
                    break
                got += more
        writer.close()
        assert got[:2] == b"\x88\x02", got  # a close frame with a code, as the first thing sent
        return struct.unpack(">H", got[2:4])[0]

    async def body(port, http):
        codes = {name: await one(port, frames) for name, (frames, _) in MALFORMED_FRAMES.items()}
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/api/ws")
        assert (await start(ws))["type"] == "ready"
        await ws.close()
        return codes

    app = make_app(fake_engine(), reconnect_wait_s=0.5)
    codes = run(app, body)
    assert codes == {name: code for name, (_, code) in MALFORMED_FRAMES.items()}
    assert app[STATE].busy_refusals == 0 and not app[STATE].slot.locked()
    assert_clean(logs)
