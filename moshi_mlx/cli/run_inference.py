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
import time

import numpy as np

from ..audio.io import AudioError, read_audio, write_audio
from ..runtime.loading import add_model_args, add_sampling_args, load_session, make_gen
from ..runtime.pipeline import FRAME_SIZE, SAMPLE_RATE, DuplexPipeline
from ..runtime.transcript import Transcript
from ..weights.errors import WeightsError
from .progress import Progress


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


def _stt_padding(cfg) -> tuple[float, float]:
    """Speech-to-text models want silence before (prefix) and after (delay + 1 s) the audio."""
    stt = cfg.extra.get("stt_config") or {}
    prefix = float(stt.get("audio_silence_prefix_seconds", 0.0))
    delay = float(stt.get("audio_delay_seconds", 0.0))
    return prefix, (delay + 1.0) if stt else 0.0


def run(args) -> dict:
    pcm = read_audio(args.infile)
    if pcm.size == 0:
        raise AudioError(f"{args.infile} contains no audio")
    session = load_session(args)
    cfg = session.cfg
    if session.is_demo:
        print(f"NOTE: {session.description}", file=sys.stderr)
    gen = make_gen(session, args)
    prefix, suffix = _stt_padding(cfg)
    n_in = -(-pcm.shape[-1] // FRAME_SIZE)
    tail = gen.own_delay if cfg.dep_q else 0
    padded = np.concatenate([
        np.zeros(int(prefix * SAMPLE_RATE), np.float32), pcm.reshape(-1),
        np.zeros(n_in * FRAME_SIZE - pcm.shape[-1] + tail * FRAME_SIZE + int(suffix * SAMPLE_RATE), np.float32),
    ])
    n_frames = len(padded) // FRAME_SIZE
    transcript = Transcript(session.tokenizer, pad_id=cfg.existing_text_padding_id)
    steps: list[tuple[int, int]] = []
    audio_tokens: list[list[int] | None] = []
    live = not args.quiet

    def on_text(ev):
        steps.append((ev.frame, ev.token))
        transcript.add(ev.token, ev.frame)

    pipe = DuplexPipeline(session.codec, _RecordingGen(gen, audio_tokens), session.n_user,
                          max_lag_ms=None, on_text=on_text).start()
    t0 = time.perf_counter()
    for i in range(n_frames):
        pipe.push_input(padded[i * FRAME_SIZE:(i + 1) * FRAME_SIZE], wait=True)
    pipe.close_input()
    bar = Progress(n_frames, label="inference", unit="frames") if live else None
    done = 0
    while not pipe.finished.wait(0.25):
        if bar is not None and pipe.stats.frames_stepped > done:
            bar.update(pipe.stats.frames_stepped - done)
            done = pipe.stats.frames_stepped
    pipe.stop()
    if pipe.error is not None:
        raise pipe.error
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.update(pipe.stats.frames_stepped - done)
        bar.close()
    if live and transcript.words:
        print(transcript.text, file=sys.stdout)
    out_frames = [it.payload[1] for it in pipe.output]
    if args.outfile:
        if not cfg.dep_q:
            print("NOTE: this model produces text only (dep_q = 0): no audio written", file=sys.stderr)
        else:
            audio = np.concatenate(out_frames) if out_frames else np.zeros(0, np.float32)
            write_audio(args.outfile, audio[: n_in * FRAME_SIZE], SAMPLE_RATE)
    if args.transcript:
        transcript.save(args.transcript)
    if args.save_tokens:
        text = np.array([t for _, t in steps], dtype=np.int64)
        audio = np.full((len(audio_tokens), max(cfg.dep_q, 0)), -1, dtype=np.int64)
        for i, a in enumerate(audio_tokens):
            if a is not None:
                audio[i] = a
        np.savez(args.save_tokens, text=text, audio=audio, frame=np.array([f for f, _ in steps]),
                 prefix_text=np.int64(gen.prefix_text_token if gen.prefix_text_token is not None else -1))
    seconds = n_frames * FRAME_SIZE / SAMPLE_RATE
    rtf = seconds / wall if wall > 0 else float("inf")
    print(f"{n_frames} frames ({seconds:.1f} s of audio) in {wall:.1f} s: {rtf:.2f}x real time", file=sys.stderr)
    return {"frames": n_frames, "wall_s": wall, "real_time_factor": rtf, "text": transcript.text}


class _RecordingGen:
    """Keeps every step's audio tokens for --save-tokens."""

    def __init__(self, gen, sink: list):
        self.gen, self.sink = gen, sink

    def step(self, codes):
        text, audio = self.gen.step(codes)
        self.sink.append(audio)
        return text, audio

    def reset(self):
        self.gen.reset()


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        run(args)
    except (WeightsError, AudioError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
