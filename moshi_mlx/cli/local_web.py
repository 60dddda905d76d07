"""`python -m moshi_mlx.local_web` (console script `moshi-web`): talk with Moshi in a browser
page on this machine: the browser's microphone (with its echo cancellation, so laptop speakers
work), Moshi's voice, the live transcript and the lag. Offline: the page is served from the
package. One conversation at a time; each connection starts a fresh one. See docs/web.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from ..errors import UsageError
from ..validation import float_arg
from ..web.protocol import DEFAULT_HOST, DEFAULT_PORT, listens_beyond_this_machine
from .flags import add_max_lag_arg
from .model_args import add_model_args, add_persona_args, add_sampling_args, load_session, sampling_kwargs
from .runner import OneLineParser, cli_main


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-web", description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    add_sampling_args(ap)
    add_persona_args(ap)
    g = ap.add_argument_group("server")
    g.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default %(default)s; browsers allow the microphone only on "
        "localhost or https, see docs/web.md)",
    )
    g.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s; 0 picks a free one)")
    add_max_lag_arg(g, "the server's delay from receiving speech to sending the answer")
    g.add_argument(
        "--no-browser",
        action="store_true",
        help="upstream moshi_mlx's flag, accepted: this server never opens a browser (it prints the URL)",
    )
    # upstream's, refused in one line saying why (argparse's would only say 'unrecognized')
    g.add_argument("--static", help=argparse.SUPPRESS)
    g.add_argument("--ssl", help=argparse.SUPPRESS)
    # tests of the lag control; checked as moshi-local's (>= 0, finite)
    g.add_argument("--slow-step-ms", type=float_arg("--slow-step-ms", lo=0.0), default=0.0, help=argparse.SUPPRESS)
    return ap


def _check_port(host: str, port: int) -> None:
    """A port already taken (or an address not of this machine) found before the model is
    loaded, not after (aiohttp binds with SO_REUSEADDR on POSIX, as here)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: {e.strerror}") from None
    for family, kind, proto, _, addr in infos[:1]:
        with socket.socket(family, kind, proto) as s:
            if os.name == "posix":
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
                s.listen(1)
            except OSError as e:
                raise UsageError(
                    f"cannot listen on {host}:{port}: {e.strerror or e}; pick another --port or --host"
                ) from None


@cli_main  # a bad flag is one `error:` line, exit 2; SIGTERM/SIGHUP stop the server like Ctrl-C
def main(argv=None) -> int:
    """Errors are one line (exit 2) and Ctrl-C / SIGTERM a clean stop, via cli/runner.py."""
    args = parser().parse_args(argv)
    if args.static is not None:
        raise UsageError("--static (upstream's downloaded client) is not taken: this server serves its own page")
    if args.ssl is not None:
        raise UsageError(
            "--ssl is not taken: this server speaks http; from another machine use an ssh tunnel "
            f"(ssh -L {DEFAULT_PORT}:localhost:{DEFAULT_PORT} mac, docs/web.md)"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if not args.host.strip():  # '' would listen on every interface and print the URL http://:PORT/
        raise UsageError(f"--host is empty: give an address, e.g. {DEFAULT_HOST} (the default)")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in 0..65535, got {args.port}")
    _check_port(args.host, args.port)
    if listens_beyond_this_machine(args.host):
        print(
            f"NOTE: --host {args.host} listens beyond this machine: whoever can reach port {args.port} may talk "
            "to Moshi (there is no password), and a browser gives the microphone only to a localhost or "
            "https page (docs/web.md)",
            file=sys.stderr,
        )
    from ..web.conversation import Engine
    from ..web.protocol import ProtocolError, validate_settings
    from ..web.server import serve

    model = load_session(args, listens=True)
    engine = Engine.from_model(model, **sampling_kwargs(args))
    try:  # the flags become the page's defaults: they must pass the page's own checks
        validate_settings(engine.defaults.as_dict(), engine.defaults)
    except ProtocolError as e:
        raise UsageError(f"sampling flags: {e}") from None

    def ready(url: str) -> None:
        print(f"open {url} in a browser (Ctrl-C to stop)", flush=True)

    serve(
        engine, args.host, args.port, max_lag_ms=args.max_lag_ms, step_delay_s=args.slow_step_ms / 1000.0, ready=ready
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
