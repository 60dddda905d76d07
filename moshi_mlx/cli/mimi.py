"""`moshi-mimi` (or `python -m moshi_mlx.mimi`): encode an audio file to Mimi codes, decode codes to audio,
or round-trip a file through the codec.

    moshi-mimi roundtrip IN OUT
    moshi-mimi encode IN CODES.npy
    moshi-mimi decode CODES.npy OUT

Any audio format/rate/channel count is read (mixed to mono, resampled to 24 kHz). Codes
are saved as int32 [1, K, frames]. Offline: `--model random-tiny` is the demo models' tiny
codec and `--mimi-weight random` the published architecture, both with seeded random
weights: the audio is then noise, but every code path runs.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..audio.io import AUDIO_SUFFIXES
from ..constants import DEFAULT_SEED, MIMI_CODEBOOKS, MIMI_REPO
from ..errors import AudioError, UsageError
from ..outputs import Output, check_outputs, write_staged
from ..runtime.loading import DEMO_MODEL, demo_mimi_config
from ..tokens import read_mimi_codes
from ..validation import int_arg, seed_arg
from .flags import add_demo_model_arg, add_force_arg, add_mimi_backend_arg, add_offline_arg, add_quiet_arg
from .runner import OneLineParser, cli_main


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--mimi-weight",
        default=None,
        help="Mimi checkpoint: local path, hf://owner/repo/file, or 'random' (seeded noise "
        "codec for offline smoke tests); default: the file named by --hf-repo's config.json",
    )
    common.add_argument("--hf-repo", default=None, help=f"Hugging Face repo to fetch from (default {MIMI_REPO})")
    common.add_argument(  # --n-q: moshi-tts's name of the same count (and the API's n_q)
        "-n",
        "--n-q",
        "--num-codebooks",
        dest="num_codebooks",
        metavar="N",
        type=int_arg("--n-q", lo=1),
        default=None,
        help=f"codebooks to use (default {MIMI_CODEBOOKS}; decode: as many as the codes file has)",
    )
    add_demo_model_arg(common, (DEMO_MODEL,), "--mimi-weight/--hf-repo (the demo models' tiny codec)")
    add_mimi_backend_arg(common, "mlx", "--backend")
    common.add_argument(
        "--seed",
        type=seed_arg(),
        default=DEFAULT_SEED,
        help=f"seed of --model / --mimi-weight random (default {DEFAULT_SEED})",
    )
    add_force_arg(common, "the output")
    add_offline_arg(common)
    add_quiet_arg(common)
    p = OneLineParser(
        prog="moshi-mimi", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True, help="what to do")
    audio_in, audio_out = "audio file (any format, rate, channels)", "audio file to write (format from the extension)"
    r = sub.add_parser("roundtrip", parents=[common], help="audio -> codes -> audio")
    r.add_argument("input", help=audio_in)
    r.add_argument("output", help=audio_out)
    e = sub.add_parser("encode", parents=[common], help="audio -> codes (.npy)")
    e.add_argument("input", help=audio_in)
    e.add_argument("codes", help="codes file to write (.npy, int32 [1, K, frames])")
    d = sub.add_parser(
        "decode", parents=[common], help="codes (.npy, or .npz from moshi-run-inference --save-tokens) -> audio"
    )
    d.add_argument("codes", help="codes to decode (.npy, or .npz from moshi-run-inference --save-tokens)")
    d.add_argument("output", help=audio_out)
    return p


def _load(args, num_codebooks: int):
    from ..models.mimi import best_backend
    from ..models.mimi_rust import require_rustymimi
    from ..weights.hub import offline_mode
    from ..weights.mimi_loader import load_mimi, random_mimi

    if args.mimi_backend == "rustymimi":
        require_rustymimi()
    if args.model is not None:
        if args.mimi_weight is not None or args.hf_repo is not None:
            raise UsageError("--model replaces --mimi-weight/--hf-repo: give one of them")
        if args.mimi_backend == "rustymimi":
            raise UsageError(
                "--model random-tiny: the tiny codec runs on MLX only (rustymimi reads the published "
                "Mimi); use --mimi-backend mlx"
            )
        args.mimi_backend = "mlx"
        print(
            f"NOTE: --model {args.model}: the demo models' tiny codec, random weights: the audio is NOISE",
            file=sys.stderr,
        )
        return random_mimi(args.seed, num_codebooks=num_codebooks, config=demo_mimi_config())
    if args.mimi_backend == "auto":
        args.mimi_backend = best_backend()
    if args.mimi_weight == "random":
        print(
            "WARNING: --mimi-weight random: seeded random weights, the audio is NOISE (smoke test only)",
            file=sys.stderr,
        )
        return random_mimi(args.seed, num_codebooks=num_codebooks, backend=args.mimi_backend)
    with offline_mode(args.offline):
        return load_mimi(args.mimi_weight, num_codebooks=num_codebooks, hf_repo=args.hf_repo, backend=args.mimi_backend)


def _check_paths(args) -> None:
    """Every output checked before any work; no path both read and written. An existing
    output is replaced only once the new one is complete (staged write)."""
    overwrite = args.force
    if args.command == "encode":
        check_outputs([Output("CODES", args.codes, (".npy",), overwrite)], [("INPUT", args.input)])
    elif args.command == "decode":
        check_outputs([Output("OUTPUT", args.output, AUDIO_SUFFIXES, overwrite)], [("CODES", args.codes)])
    else:
        check_outputs([Output("OUTPUT", args.output, AUDIO_SUFFIXES, overwrite)], [("INPUT", args.input)])


@cli_main
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_paths(args)
    from ..runtime.mimi_files import decode_to_file, encode_file, frame_count, roundtrip_file

    t0 = time.monotonic()
    if args.command == "decode":
        codes = read_mimi_codes(args.codes)
        mimi = _load(args, args.num_codebooks or codes.shape[1])
        if codes.size and (codes.min() < 0 or codes.max() >= mimi.cardinality):
            raise AudioError(
                f"{args.codes}: codes must be in [0, {mimi.cardinality}), got values in [{codes.min()}, {codes.max()}]"
            )
        total = codes.shape[-1]
    else:
        mimi = _load(args, args.num_codebooks or MIMI_CODEBOOKS)
        total = frame_count(args.input, mimi)
    from tqdm import tqdm

    with tqdm(total=total, desc=args.command, unit="frames", disable=args.quiet, file=sys.stderr) as bar:
        if args.command == "encode":
            codes = encode_file(mimi, args.input, bar.update)
            with write_staged(args.codes) as f:  # a file object: np.save adds no suffix
                np.save(f, codes)
            what = f"{args.input} -> codes {list(codes.shape)} -> {args.codes}"
        elif args.command == "decode":
            n = decode_to_file(mimi, codes, args.output, bar.update)
            what = f"codes {list(codes.shape)} -> {n / mimi.sample_rate:.2f} s of audio -> {args.output}"
        else:
            codes = roundtrip_file(mimi, args.input, args.output, bar.update)
            what = f"{args.input} -> codes {list(codes.shape)} -> {args.output}"
    seconds = codes.shape[-1] * mimi.frame_size / mimi.sample_rate
    elapsed = time.monotonic() - t0
    print(f"{what} ({seconds:.2f} s of audio in {elapsed:.1f} s, backend {args.mimi_backend})")
    return 0


parser = _parser  # every tool has `parser()` (tests/cli/test_conventions.py walks them)
run = main  # the name the tests and older callers use
