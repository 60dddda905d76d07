"""`python -m moshi_mlx.helium "prompt"` (console script `moshi-helium`): text generation with
Helium, Kyutai's text language model (or the temporal transformer of a Moshi checkpoint),
printed as it is generated.

The prompt comes from the argument, `--prompt-file FILE`, or stdin (`-`). With `--tokenizer
none` the model takes and prints token ids.
"""

from __future__ import annotations

import argparse
import sys
import time

from ..constants import DEFAULT_SEED
from ..errors import UsageError
from ..models.helium import TEXT_DEFAULTS
from ..models.sampling import check_text_sampling
from ..validation import seed_arg
from .model_args import add_model_args, load_session, use_default_repo
from .runner import OneLineParser, cli_main

DEFAULT_REPO = "kyutai/helium-1-preview-2b-mlx"


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-helium", description=__doc__.split("\n\n")[0])
    ap.add_argument("prompt", nargs="?", help="the text to continue ('-': read it from stdin)")
    ap.add_argument("--prompt-file", help="read the prompt from this file")
    add_model_args(
        ap,
        default_repo=f"{DEFAULT_REPO}; -q 4/8: its q4/q8 files (helium-1-preview-2b-q4/-q8)",
        codec=False,
        quantized_help="pick Helium's file of that quantization (helium-1-preview-2b-q4 or "
        "-q8) in place of the bf16 one",
    )
    g = ap.add_argument_group("generation")
    g.add_argument("--max-tokens", "-n", type=int, default=200, help="tokens to generate at most (default %(default)s)")
    g.add_argument("--temp", type=float, help=f"temperature (default {TEXT_DEFAULTS['temp']}; 0 = greedy)")
    g.add_argument("--top-k", type=int, help="keep the k most likely tokens (default off)")
    g.add_argument("--top-p", type=float, help=f"nucleus sampling mass (default {TEXT_DEFAULTS['top_p']}; 0 = off)")
    g.add_argument(
        "--seed", type=seed_arg(), default=DEFAULT_SEED, help=f"sampling seed, in [0, 2**32) (default {DEFAULT_SEED})"
    )
    g.add_argument("--no-stop", action="store_true", help="keep going after the end-of-text token")
    g.add_argument("--quiet", action="store_true", help="do not print the prompt and the speed line")
    return ap


def _prompt(args) -> str:
    given = [x for x in (args.prompt, args.prompt_file) if x is not None]
    if len(given) != 1:
        raise UsageError("give the prompt as an argument, '-' for stdin, or --prompt-file (one of them)")
    if args.prompt_file:
        try:
            with open(args.prompt_file, encoding="utf-8") as f:
                return f.read()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read the prompt file {args.prompt_file}: {getattr(e, 'strerror', None) or e}")
    if args.prompt == "-":
        return sys.stdin.read()
    return args.prompt


def run(args) -> int:
    if args.max_tokens < 0:
        raise UsageError(f"--max-tokens must be >= 0, got {args.max_tokens}")
    check_text_sampling(args.temp, args.top_k, args.top_p)
    prompt = _prompt(args)
    use_default_repo(args, DEFAULT_REPO)  # -q picks its helium-1-preview-2b-q4/q8 file
    session = load_session(args, with_codec=False)
    stream = session.text_stream(temp=args.temp, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    ids = stream.encode(prompt)  # a bad prompt is one error line, before the prompt is echoed
    out = sys.stdout
    if not args.quiet:
        out.write(prompt)
        out.flush()
    t0 = time.perf_counter()
    try:
        for piece in stream.stream(ids, args.max_tokens, stop_at_eos=not args.no_stop):
            out.write(piece)
            out.flush()
    finally:
        out.write("\n")
        out.flush()
    wall = time.perf_counter() - t0
    n = len(stream.tokens)
    if not args.quiet:
        print(
            f"{n} tokens in {wall:.1f} s ({n / wall if wall > 0 else 0:.1f} tokens/s, prompt prefill included)",
            file=sys.stderr,
        )
    return 0


@cli_main
def main(argv=None) -> int:
    return run(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
