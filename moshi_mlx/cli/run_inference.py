"""`python -m moshi_mlx.run_inference IN [OUT]`: run Moshi (or Hibiki, or a speech-to-text
model) over an audio file, as if it had been spoken to it, and write the model's audio,
its transcript with per-word timestamps, and optionally every token.

Any format, rate and channel count in (mixed to mono, resampled to 24 kHz). The same
pipeline as the live loop runs, without a clock: encoder, LM and decoder overlap, nothing
is skipped. The model's own audio lags its input by its acoustic delay, so that many
frames of silence follow the file to let it finish.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..audio.io import AudioError, read_audio
from ..errors import Error
from ..runtime.loading import add_model_args, add_sampling_args, load_session, sampling_kwargs


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m moshi_mlx.run_inference", description=__doc__.split("\n\n")[0])
    ap.add_argument("infile", help="input audio file (any format/rate/channels)")
    ap.add_argument("outfile", nargs="?", help="where to write the model's audio (24 kHz; format from the extension)")
    add_model_args(ap)
    add_sampling_args(ap)
    ap.add_argument("--transcript", help="save the transcript with word timestamps (.json, or text for other extensions)")
    ap.add_argument("--save-tokens", help="save text and audio tokens per step (.npz)")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, no transcript on stdout")
    return ap


def run(args) -> dict:
    """Read the file (bad input fails before any model is loaded), load, `Model.respond`."""
    pcm = read_audio(args.infile)
    if pcm.size == 0:
        raise AudioError(f"{args.infile} contains no audio")
    model = load_session(args)
    if model.is_demo:
        print(f"NOTE: {model.description}", file=sys.stderr)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(unit="frames", desc="inference", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    if args.outfile and not model.speaks:
        print("NOTE: this model produces text only (dep_q = 0): no audio written", file=sys.stderr)
    try:
        res = model.respond(pcm, args.outfile, sample_rate=model.sample_rate, transcript_path=args.transcript,
                            progress=progress if bar is not None else None, **sampling_kwargs(args))
    finally:
        if bar is not None:
            bar.close()
    if not args.quiet and res.transcript.words:
        print(res.text, file=sys.stdout)
    if args.save_tokens:
        dep_q = max(model.cfg.dep_q, 0)
        audio = np.full((len(res.tokens), dep_q), -1, dtype=np.int64)
        for i, (_, _, a) in enumerate(res.tokens):
            if a is not None:
                audio[i] = a
        prefix = res.prefix_text_token
        np.savez(args.save_tokens, text=np.array([t for _, t, _ in res.tokens], dtype=np.int64), audio=audio,
                 frame=np.array([f for f, _, _ in res.tokens]), prefix_text=np.int64(prefix if prefix is not None else -1))
    seconds = res.frames * model.frame_size / model.sample_rate
    print(f"{res.frames} frames ({seconds:.1f} s of audio) in {res.wall_s:.1f} s: {res.real_time_factor:.2f}x real time",
          file=sys.stderr)
    return {"frames": res.frames, "wall_s": res.wall_s, "real_time_factor": res.real_time_factor, "text": res.text}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
