"""`python -m moshi_mlx.local` (console script `moshi-local`): talk with Moshi through the
microphone and speakers, both directions at once, offline.

The flags of upstream's `moshi_mlx.local` are kept (-q, --hf-repo, --moshi-weight,
--mimi-weight, --tokenizer, --lm-config, --steps). Latency is bounded by --max-lag-ms: when
compute falls behind, input frames are skipped and late output is dropped instead of letting
the delay grow; the current delay is shown as it changes. There is no step limit unless asked.
"""

from __future__ import annotations

import argparse
import sys

from .. import demo_clip
from ..audio.io import read_audio
from ..outputs import Output, check_outputs
from ..runtime.live import LiveOptions, run_session, summary_line
from ..runtime.transcript import TRANSCRIPT_SUFFIXES
from ..constants import FRAME_SECONDS
from ..errors import UsageError
from ..validation import float_arg, int_arg, positive_or_off_arg
from .device_args import add_device_args, check_devices, list_devices_or_run
from .echo_args import add_echo_args, echo_from_args
from .flags import add_force_arg, add_max_lag_arg
from .model_args import (
    add_model_args,
    add_persona_args,
    add_sampling_args,
    load_session,
    model_inputs,
    sampling_kwargs,
)
from .runner import OneLineParser, cli_main, received_signal


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-local", description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    add_sampling_args(ap)
    add_persona_args(ap)
    add_live_args(ap)
    return ap


def add_live_args(ap, who: str = "Moshi") -> None:
    """The live loop's flags (sound card, lag, recording, transcript, echo cancellation), which
    moshi-translate shares."""
    g = ap.add_argument_group("audio")
    add_device_args(g, output=True)
    add_max_lag_arg(g, "the delay from speaking to hearing the answer's frame")
    g.add_argument("--record", help=f"record both sides to this stereo WAV (left: you, right: {who})")
    g.add_argument("--transcript", help=f"save {who}'s words with timestamps (.json, or .txt)")
    add_force_arg(g, "--record / --transcript")
    g.add_argument(
        "--duration",
        type=positive_or_off_arg("--duration"),
        help="stop after this many seconds (default: until Ctrl-C)",
    )
    g.add_argument(
        "--steps",
        type=int_arg("--steps", lo=1),
        help="stop after this many 80 ms steps, as --duration N x 0.08 (upstream moshi_mlx's flag, whose "
        "default was 4000; here: until Ctrl-C)",
    )
    g.add_argument(
        "--simulate",
        metavar="AUDIO_FILE",
        nargs="?",
        const=demo_clip(),
        help="no sound card: a simulated device plays this file as the microphone, in real time "
        "(no file: the package's short spoken clip)",
    )
    g.add_argument(
        "--slow-step-ms",
        type=float_arg("--slow-step-ms", lo=0.0),
        default=0.0,
        help="add this much compute time to every LM step (to see the lag control on a fast machine)",
    )
    add_echo_args(ap)


def check_paths(args) -> None:
    """Outputs checked before the model is loaded: folders exist and are writable, known
    extensions, no path in two roles, existing files replaced only with --force."""
    check_outputs(
        [
            Output("--record", args.record, (".wav",), args.force),
            Output("--transcript", args.transcript, TRANSCRIPT_SUFFIXES, args.force),
        ],
        [("--simulate", args.simulate), *model_inputs(args)],
    )


def run(args, *, check=None, end_policy=None) -> int:
    """Check the outputs, the input file or the audio devices, load (a model that takes no audio
    is refused before its weights are read), then `runtime.live.run_session`. check(cfg, name): a
    front end's own refusal from the config, before the weights are read (moshi-translate: a
    translation model); end_policy: a translation model's live end of turn
    (runtime/translation.py SilencePolicy)."""
    if args.steps is not None:  # upstream's --steps: one limit, said as the time it takes
        if args.duration is not None:
            raise UsageError("--steps and --duration both say when to stop: give one of them")
        args.duration = args.steps * FRAME_SECONDS
    check_paths(args)
    source = read_audio(args.simulate).reshape(-1) if args.simulate else None
    if source is None:  # a missing or misspelled device is said before a model loads for a minute
        check_devices(args, input=True, output=True)
    model = load_session(args, listens=True, check=check)
    gen = model.generator(**sampling_kwargs(args))
    if source is not None:
        print(f"simulated device: {args.simulate} as the microphone", file=sys.stderr)
    opts = LiveOptions(
        max_lag_ms=args.max_lag_ms,
        duration=args.duration,
        record=args.record,
        record_raw_mic=args.record_mic == "raw",
        transcript=args.transcript,
        step_delay_s=args.slow_step_ms / 1000.0,
        input_device=args.input_device,
        output_device=args.output_device,
        end_policy=end_policy,
    )

    def make_echo(output_name, input_rate, output_rate):
        return echo_from_args(
            args, output_name, input_rate=input_rate, output_rate=output_rate, log=lambda m: print(m, file=sys.stderr)
        )

    res = run_session(model, gen, opts, source=source, make_echo=make_echo, received_signal=received_signal)
    if res.pipe is None:
        return res.code
    print("\n" + summary_line(res.pipe.stats), file=sys.stderr)
    if res.echo is not None:
        print(res.echo.stats.describe(), file=sys.stderr)
    if res.pipe.error is not None and res.code == 0:
        raise res.pipe.error
    return res.code


@cli_main
def main(argv=None) -> int:
    return list_devices_or_run(parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
