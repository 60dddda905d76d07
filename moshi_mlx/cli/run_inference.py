"""`python -m moshi_mlx.run_inference IN [OUT]`: run Moshi (or Hibiki, or a speech-to-text
model) over an audio file, as if it had been spoken to it, and write the model's audio,
its transcript with per-word timestamps, and optionally every token.

Any format, rate and channel count in (mixed to mono, resampled to 24 kHz). The same
pipeline as the live loop runs, without a clock: encoder, LM and decoder overlap, nothing
is skipped. The model's own audio lags its input by its acoustic delay: own_delay - 1
frames of silence follow the file to let it finish (`Conversation.tail_frames`).
"""

from __future__ import annotations

import argparse
import os
import sys

from ..audio.io import AUDIO_SUFFIXES, AudioError, read_audio
from ..constants import CONVERT_COMMAND, SAMPLE_RATE
from ..outputs import Output, check_outputs
from ..runtime.transcript import TRANSCRIPT_SUFFIXES
from ..tokens import TOKENS_SUFFIXES
from .flags import add_force_arg, add_quiet_arg
from .model_args import (
    add_model_args,
    add_persona_args,
    add_sampling_args,
    load_session,
    model_inputs,
    sampling_kwargs,
)
from .runner import OneLineParser, cli_main


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-run-inference", description=__doc__.split("\n\n")[0])
    ap.add_argument("infile", help="input audio file (any format/rate/channels)")
    ap.add_argument(
        "outfile",
        nargs="?",
        help=f"where to write the model's audio ({SAMPLE_RATE // 1000} kHz; format from the extension)",
    )
    add_model_args(ap)
    add_sampling_args(ap)
    add_persona_args(ap)
    ap.add_argument("--transcript", help="save the transcript with word timestamps (.json, or .txt)")
    ap.add_argument(
        "--save-tokens",
        help=f"save every step's tokens (.npz; read by moshi-mimi decode, moshi-quality --codes, {CONVERT_COMMAND} --eval-codes)",
    )
    add_force_arg(ap, "OUTFILE, --transcript and --save-tokens")
    add_quiet_arg(ap, "no progress bar, no transcript on stdout")
    ap.add_argument(
        "--verbose", action="store_true", help="upstream moshi_mlx's flag, accepted (unused there and here)"
    )
    return ap


def check_paths(args) -> None:
    """Every output checked before any work, none the input or another output."""
    check_outputs(
        [
            Output("OUTFILE", args.outfile, AUDIO_SUFFIXES, args.force),
            Output("--transcript", args.transcript, TRANSCRIPT_SUFFIXES, args.force),
            Output("--save-tokens", args.save_tokens, TOKENS_SUFFIXES, args.force),
        ],
        [("INFILE", args.infile), *model_inputs(args)],
    )


def run(args, *, check=None) -> dict:
    """Check the outputs, read the file (bad input fails before any model is loaded), load,
    `Model.respond` (which writes the audio, transcript and tokens, renamed together). Ctrl-C /
    SIGTERM: the outputs are written for the frames answered so far, then the interrupt goes on
    to the runner (exit 130 / 143).
    check(cfg, name): a front end's own refusal from the config, before the weights are read
    (moshi-translate: a translation model)."""
    check_paths(args)
    existed = {p for p in (args.outfile, args.transcript, args.save_tokens) if p and os.path.exists(p)}
    pcm = read_audio(args.infile)
    if pcm.size == 0:
        raise AudioError(f"{args.infile} contains no audio")
    model = load_session(args, listens=True, check=check)  # a text or TTS model: refused from its config
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # made at the first call, which brings the total: no "0frames" bar without one
            from tqdm import tqdm

            bar = tqdm(total=total, unit="frames", desc="inference", file=sys.stderr)
        bar.total = total
        bar.update(done - bar.n)

    if args.outfile and not model.speaks:
        print("NOTE: this model produces text only (dep_q = 0): no audio written", file=sys.stderr)
    try:
        res = model.respond(
            pcm,
            args.outfile,
            sample_rate=model.sample_rate,
            transcript_path=args.transcript,
            tokens_path=args.save_tokens,
            progress=None if args.quiet else progress,
            **sampling_kwargs(args),
        )
    except KeyboardInterrupt as e:
        if bar is not None:
            bar.close()
        res = getattr(e, "partial", None)
        if res is not None:
            asked = [p for p in (args.outfile if model.speaks else None, args.transcript, args.save_tokens) if p]
            kept = [p for p in asked if p in existed]  # a complete earlier result is not replaced by a partial one
            saved = [p for p in asked if p not in kept]
            print(
                f"\npartial outputs saved ({res.frames} frames answered): {', '.join(saved) or 'none'}"
                + (f"; left as they were: {', '.join(kept)}" if kept else ""),
                file=sys.stderr,
            )
        raise
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet and res.transcript.words:
        print(res.text, file=sys.stdout)
    seconds = res.frames * model.frame_size / model.sample_rate
    print(
        f"{res.frames} frames ({seconds:.1f} s of audio) in {res.wall_s:.1f} s: {res.real_time_factor:.2f}x real time",
        file=sys.stderr,
    )
    return {"frames": res.frames, "wall_s": res.wall_s, "real_time_factor": res.real_time_factor, "text": res.text}


@cli_main
def main(argv=None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
