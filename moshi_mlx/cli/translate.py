"""`python -m moshi_mlx.translate [INFILE [OUTFILE]]` (console script `moshi-translate`): live
speech translation with Hibiki-Zero (French, Spanish, Portuguese, German -> English) or Hibiki.

Without INFILE: the microphone is translated to English speech on the speakers and English
text on screen, as `moshi-local` runs a conversation (same lag control, echo cancellation,
--record, --transcript, --simulate). A pause of --end-silence seconds ends the speaker's turn:
the end-of-input marker is sent, so the model says the last words (a new line on screen).
With INFILE: the file is translated to OUTFILE (24 kHz) and --transcript (timestamped), the
translation cut at the model's end of sequence. See docs/translation.md.
"""

from __future__ import annotations

import argparse
import sys

from ..constants import CONVERT_COMMAND, SAMPLE_RATE
from ..errors import UsageError
from ..runtime.translation import END_SILENCE_S, END_THRESHOLD_DB, SilencePolicy, is_translation_model
from ..validation import float_arg, positive_or_off_arg
from . import local, run_inference
from .device_args import list_devices_or_run
from .model_args import add_model_args, add_sampling_args, use_default_repo
from .model_kind import what_it_is
from .runner import OneLineParser, cli_main

DEFAULT_REPO = "kyutai/hibiki-zero-3b-pytorch-bf16"
# each mode's own flags: given in the other mode they would do nothing (the tokens asked for
# never written, a pause policy never applied), so they are refused before loading
LIVE_ONLY = (
    "--simulate",
    "--record",
    "--duration",
    "--steps",
    "--max-lag-ms",
    "--slow-step-ms",
    "--end-silence",
    "--end-threshold-db",
    "--input-device",
    "--output-device",
    "--echo-cancel",
    "--echo-canceller",
    "--noise-suppression",
    "--no-high-pass",
    "--record-mic",
)
FILE_ONLY = ("--save-tokens", "--quiet")


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-translate", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "infile",
        nargs="?",
        help="audio file to translate (any format/rate/channels); leave it out to translate the microphone",
    )
    ap.add_argument(
        "outfile",
        nargs="?",
        help=f"where to write the translated speech ({SAMPLE_RATE // 1000} kHz; format from the extension)",
    )
    add_model_args(
        ap,
        default_repo=f"{DEFAULT_REPO} (Hibiki-Zero; or a q4/q8 folder made by {CONVERT_COMMAND}, "
        "or kyutai/hibiki-2b-mlx-bf16)",
        demo_models=("random-tiny-hibiki-zero",),
        quantized_help=f"the q4/q8 file of an --hf-repo folder ({CONVERT_COMMAND}): Hibiki-Zero's repo has no "
        "q4/q8 twin, -q alone is refused",
    )
    add_sampling_args(ap)
    local.add_live_args(ap, who="the translation")
    ap.add_argument(
        "--end-silence",
        type=positive_or_off_arg("--end-silence"),
        default=END_SILENCE_S,
        help=f"live: seconds of silence after speech that end a turn (the end-of-input marker is sent "
        f'so the last words are translated; default {END_SILENCE_S}; "off": never)',
    )
    ap.add_argument(
        "--end-threshold-db",
        type=float_arg("--end-threshold-db", hi=0.0),
        default=END_THRESHOLD_DB,
        help=f"live: input below this RMS level (dBFS, after echo cancellation) counts as silence "
        f"(default {END_THRESHOLD_DB:g}; raise it in a noisy room or if the translation's echo "
        "keeps turns from ending)",
    )
    ap.add_argument("--save-tokens", help="file mode: save every step's tokens (.npz)")
    ap.add_argument("--quiet", action="store_true", help="file mode: no progress bar, no text on stdout")
    return ap


def _check_translates(cfg, name: str) -> None:
    """`load(check=...)`: a model that is not Hibiki / Hibiki-Zero is refused from its config,
    before its weights are read, saying what it is and what to give instead."""
    if not is_translation_model(cfg):
        raise UsageError(
            f"{name} is not a translation model ({what_it_is(cfg)}); to translate, give --hf-repo "
            f"a Hibiki model such as {DEFAULT_REPO} (the default) or kyutai/hibiki-2b-mlx-bf16"
        )


def _given(args, flags: tuple[str, ...]) -> list[str]:
    """Those of `flags` the command line set to something else than their default."""
    actions = {s: a for a in parser()._actions for s in a.option_strings}
    return [f for f in flags if getattr(args, actions[f].dest) != actions[f].default]


def run(args) -> int:
    use_default_repo(args, DEFAULT_REPO, "Hibiki-Zero")
    if args.infile is None:
        if args.outfile is not None:
            raise UsageError("OUTFILE needs an INFILE")
        for flag in _given(args, FILE_ONLY):
            raise UsageError(f"{flag} is for translating a file (give INFILE)")
        policy = SilencePolicy(silence_s=args.end_silence, threshold_db=args.end_threshold_db)
        return local.run(args, check=_check_translates, end_policy=policy)
    for flag in _given(args, LIVE_ONLY):
        raise UsageError(f"{flag} is for the live mode (leave out INFILE)")
    run_inference.run(args, check=_check_translates)
    return 0


@cli_main
def main(argv=None) -> int:
    return list_devices_or_run(parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
