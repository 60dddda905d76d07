"""The live loop's echo cancellation flags (moshi-local, moshi-translate) and the
`EchoCanceller` they ask for (runtime/echo.py; docs/echo-cancellation.md)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..runtime.echo import CANCELLERS, DEFAULT_CANCELLER, MODES, EchoCanceller, EchoUnavailable, resolve_mode


def add_echo_args(ap: argparse.ArgumentParser) -> None:
    """The live loop's echo cancellation flags (docs/echo-cancellation.md). Shared by moshi-local
    and moshi-translate (Hibiki-Zero), so their help says "the model", never Moshi."""
    g = ap.add_argument_group("echo cancellation (talk without headphones)")
    g.add_argument(
        "--echo-cancel",
        choices=MODES,
        default="auto",
        help="remove the model's own voice (played by the speakers) from the microphone; auto: on unless the "
        "output device's name says headphones/headset/AirPods (default auto)",
    )
    g.add_argument(
        "--echo-canceller",
        choices=CANCELLERS,
        default=DEFAULT_CANCELLER,
        help="linear: adaptive filter + gentle suppressor that keep your voice while the model talks "
        "(default); aec3: WebRTC AEC3 (livekit), which ducks your voice while the model talks",
    )
    g.add_argument(
        "--noise-suppression",
        action="store_true",
        help="also suppress steady background noise (WebRTC's; needs --echo-canceller aec3)",
    )
    g.add_argument(
        "--no-high-pass",
        dest="high_pass",
        action="store_false",
        help="keep frequencies below ~80 Hz in the microphone (filtered by default)",
    )
    g.add_argument(
        "--record-mic",
        choices=("cleaned", "raw"),
        default="cleaned",
        help="--record's left channel: the microphone as the model heard it (cleaned, default) or as captured",
    )


def echo_from_args(args: argparse.Namespace, output_name: str | None, *, input_rate: int, output_rate: int, log=print):
    """The EchoCanceller the flags ask for, or None. With --echo-cancel auto a missing
    library is one warning line and the loop runs without; with `on` it is an error."""
    kind = getattr(args, "echo_canceller", DEFAULT_CANCELLER)
    if args.noise_suppression and kind != "aec3":
        raise UsageError("--noise-suppression is WebRTC's and needs --echo-canceller aec3")
    enabled, why = resolve_mode(args.echo_cancel, output_name)
    if not enabled:
        log(f"echo cancellation: {why}")
        return None
    try:
        ec = EchoCanceller(
            output_rate=output_rate,
            input_rate=input_rate,
            canceller=kind,
            noise_suppression=args.noise_suppression,
            high_pass=args.high_pass,
        )
    except EchoUnavailable as e:
        if args.echo_cancel == "on":
            raise
        log(f"warning: {e}; continuing WITHOUT echo cancellation (use headphones)")
        return None
    extras = [n for n, on in (("noise suppression", args.noise_suppression), ("high-pass", args.high_pass)) if on]
    log(f"echo cancellation: {why} ({ec.backend.name}{', ' + ', '.join(extras) if extras else ''})")
    return ec
