"""The browser front end (`python -m moshi_mlx.local_web`): an aiohttp server that serves a
static page from this package and runs one conversation at a time over a WebSocket.

Layering: a front end like `cli/`, it imports `runtime/` only. `protocol` validates what
clients send, `conversation` runs one conversation on the shared `DuplexPipeline`, `server`
is the HTTP/WebSocket glue. See docs/web.md.
"""
