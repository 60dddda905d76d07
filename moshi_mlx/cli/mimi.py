"""`python -m moshi_mlx.mimi`: encode an audio file to Mimi codes, decode codes to audio,
or round-trip a file through the codec.

    python -m moshi_mlx.mimi roundtrip IN OUT
    python -m moshi_mlx.mimi encode IN CODES.npy
    python -m moshi_mlx.mimi decode CODES.npy OUT

Any audio format/rate/channel count is read (mixed to mono, resampled to 24 kHz). Codes
are saved as int32 [1, K, frames]. `--mimi-weight random` uses seeded random weights of the
real architecture, offline: the audio is then noise, but every code path runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..audio.io import AudioError
from ..constants import MIMI_REPO
from ..errors import Error


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--mimi-weight", default=None,
                        help="Mimi checkpoint: local path, hf://owner/repo/file, or 'random' (seeded noise "
                             "codec for offline smoke tests); default: the file named by --hf-repo's config.json")
    common.add_argument("--hf-repo", default=None, help=f"Hugging Face repo to fetch from (default {MIMI_REPO})")
    common.add_argument("-n", "--num-codebooks", type=int, default=None,
                        help="codebooks to use (default 8; decode: as many as the codes file has)")
    common.add_argument("--backend", choices=("mlx", "rustymimi"), default="mlx", help="codec implementation")
    common.add_argument("--seed", type=int, default=0, help="seed of --mimi-weight random")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    p = argparse.ArgumentParser(prog="python -m moshi_mlx.mimi", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("roundtrip", parents=[common], help="audio -> codes -> audio")
    r.add_argument("input")
    r.add_argument("output")
    e = sub.add_parser("encode", parents=[common], help="audio -> codes (.npy)")
    e.add_argument("input")
    e.add_argument("codes")
    d = sub.add_parser("decode", parents=[common], help="codes (.npy) -> audio")
    d.add_argument("codes")
    d.add_argument("output")
    return p


def _load(args, num_codebooks: int):
    from ..weights.mimi_loader import load_mimi, random_mimi

    if args.mimi_weight == "random":
        print("WARNING: --mimi-weight random: seeded random weights, the audio is NOISE (smoke test only)",
              file=sys.stderr)
        return random_mimi(args.seed, num_codebooks=num_codebooks, backend=args.backend)
    return load_mimi(args.mimi_weight, num_codebooks=num_codebooks, hf_repo=args.hf_repo, backend=args.backend)


def _read_codes(path: str) -> np.ndarray:
    try:
        codes = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise AudioError(f"codes file not found: {path}") from None
    except (ValueError, OSError) as e:
        raise AudioError(f"cannot read {path} as a .npy codes file: {e}") from None
    if codes.ndim == 2:
        codes = codes[None]
    if codes.ndim != 3 or codes.shape[0] != 1 or not np.issubdtype(codes.dtype, np.integer):
        raise AudioError(f"{path}: expected integer codes of shape [K, T] or [1, K, T], got {codes.dtype} {codes.shape}")
    return codes


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..runtime.mimi_files import decode_to_file, encode_file, frame_count, roundtrip_file

    t0 = time.monotonic()
    try:
        if args.command == "decode":
            codes = _read_codes(args.codes)
            mimi = _load(args, args.num_codebooks or codes.shape[1])
            total = codes.shape[-1]
        else:
            mimi = _load(args, args.num_codebooks or 8)
            total = frame_count(args.input, mimi)
        from tqdm import tqdm

        with tqdm(total=total, desc=args.command, unit="frames", disable=args.quiet, file=sys.stderr) as bar:
            if args.command == "encode":
                codes = encode_file(mimi, args.input, bar.update)
                np.save(args.codes, codes)
                what = f"{args.input} -> codes {list(codes.shape)} -> {args.codes}"
            elif args.command == "decode":
                n = decode_to_file(mimi, codes, args.output, bar.update)
                what = f"codes {list(codes.shape)} -> {n / mimi.sample_rate:.2f} s of audio -> {args.output}"
            else:
                codes = roundtrip_file(mimi, args.input, args.output, bar.update)
                what = f"{args.input} -> codes {list(codes.shape)} -> {args.output}"
    except Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = codes.shape[-1] * mimi.frame_size / mimi.sample_rate
    elapsed = time.monotonic() - t0
    print(f"{what} ({seconds:.2f} s of audio in {elapsed:.1f} s, backend {args.backend})")
    return 0


def main() -> None:
    sys.exit(run())
