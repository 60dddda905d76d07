"""`moshi-convert` (or `python -m moshi_mlx.convert`): turn an LM checkpoint (PyTorch or
MLX layout, float) into an MLX model folder, optionally quantized; optionally report the
quality of the result against its source.

    moshi-convert model.safetensors --out moshiko-q4 -q 4
    moshi-convert --hf-repo kyutai/moshiko-pytorch-bf16 --out moshiko-q8 -q 8
    moshi-convert model.safetensors --out moshiko-mixed --quant-predicate mixed-4-8 --eval

The folder holds config.json (the LM config, the file names, the quantization record) and
the weights (`model.q4.safetensors`, `model.q8.safetensors`, `model.mixed-4-8.safetensors`,
...); `load_lm(folder)` and the run CLIs' `--hf-repo/--moshi-weight FOLDER` read it.
Flags follow mlx-lm's convert (`-q` alone is 4 bits, `-q --q-bits 8` is `-q 8`). Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..constants import CONVERT_COMMAND, DEFAULT_SEED, DEMO_MODEL
from ..errors import OutputError, UsageError
from ..outputs import Output, check_outputs, signals_held
from ..validation import int_arg, seed_arg
from .flags import add_demo_model_arg, add_lora_arg, add_offline_arg, add_quiet_arg
from .runner import OneLineParser, cli_main


def _int(name: str, lo: int | None = 1):
    """An integer flag (>= 1 unless said otherwise), checked by `moshi_mlx.validation`."""
    return int_arg(name, lo=lo)


def build_parser() -> argparse.ArgumentParser:
    from ..weights.convert import FLOAT_DTYPES, QUALITY_NAME, STORED_DTYPE
    from ..weights.quality import EVAL_FRAMES
    from ..weights.quantize import DEFAULT_BITS, available_modes
    from ..weights.recipes import recipe_help

    p = OneLineParser(
        prog=CONVERT_COMMAND,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "source",
        nargs="?",
        help="weights to convert: a .safetensors file (PyTorch or MLX layout), a "
        "model folder, a Hub repo id or hf://OWNER/NAME[/FILE] (as loading takes them), or a file name in --hf-repo",
    )
    p.add_argument("--hf-repo", help="Hugging Face repo to convert (its config.json or known preset gives the config)")
    add_demo_model_arg(p, (DEMO_MODEL,), "SOURCE (written in PyTorch layout on the fly, seeded by --seed)")
    p.add_argument("--out", "--mlx-path", dest="out", required=True, help="output model folder")
    p.add_argument(  # the run CLIs' --lm-config (upstream's --config-path); --config: this tool's first name
        "--lm-config",
        "--config",
        "--config-path",
        dest="config",
        help="LM config: a config.json or a preset name (default: the source's config.json, "
        "else the preset whose shapes the file fits)",
    )
    add_lora_arg(p)
    p.add_argument(
        "-q",
        "--quantize",
        "--quantized",
        dest="quantize",
        nargs="?",
        const=0,
        type=_int("-q"),
        metavar="BITS",
        help=f"quantize the weights to BITS bits (4, 8; affine also 2, 3, 5, 6); -q alone: {DEFAULT_BITS} or --q-bits",
    )
    p.add_argument("--q-bits", type=_int("--q-bits"), help="bits per weight, as -q BITS (mlx-lm's spelling)")
    p.add_argument(
        "--q-group-size",
        type=_int("--q-group-size"),
        help="weights per scale/bias (32, 64, 128; default 32 at <= 4 bits, 64 above: the published files)",
    )
    p.add_argument(
        "--q-mode",
        default="affine",
        help=f"quantization mode: {', '.join(available_modes())} (what the installed MLX offers; default %(default)s)",
    )
    p.add_argument(
        "--quant-predicate",
        "--recipe",
        dest="recipe",
        help=f"which modules get which bits (implies -q): {recipe_help()}",
    )
    p.add_argument(
        "--weights-dtype",
        default=STORED_DTYPE,
        choices=tuple(FLOAT_DTYPES),
        help="dtype the float tensors and the affine scales/biases are stored in (default %(default)s)",
    )
    p.add_argument("--dtype", dest="old_dtype", help=argparse.SUPPRESS)  # renamed: --dtype runs a model in every CLI
    p.add_argument(
        "--force",
        "--overwrite",
        action="store_true",
        help="write into an existing non-empty --out and "
        "replace --eval-json (never an input: the source's own folder is refused)",
    )
    p.add_argument(
        "--no-assets",
        action="store_true",
        help="do not copy the Mimi / tokenizer files named by the config into the folder",
    )
    add_offline_arg(p)
    add_quiet_arg(p)
    e = p.add_argument_group("quality report (--eval)")
    e.add_argument(
        "--eval",
        action="store_true",
        help="after converting, compare the result with the source "
        "(teacher-forced top-1 agreement and KL per stream; implied by "
        "the other --eval-* flags)",
    )
    e.add_argument("--eval-frames", type=_int("--eval-frames"), help=f"frames to evaluate (default {EVAL_FRAMES})")
    e.add_argument(
        "--eval-codes",
        help=".npy codes [K, T] or [1, K, T], or a .npz from moshi-run-inference --save-tokens, "
        "to evaluate on (default: generated by the source model, seeded)",
    )
    e.add_argument("--eval-json", help=f"where to save the report (default OUT/{QUALITY_NAME})")
    e.add_argument(
        "--seed",
        type=seed_arg(),
        default=DEFAULT_SEED,
        help=f"seed of --model's random weights and of the generated evaluation codes (default {DEFAULT_SEED})",
    )
    return p


def _demo_checkpoint(name: str, seed: int, what: str = "the converted model"):
    """Write the demo model's random checkpoint (PyTorch layout) to a temporary folder."""
    import atexit
    import json
    import shutil
    import tempfile

    from ..constants import CONFIG_NAME
    from ..models.config import preset
    from ..runtime.loading import DEMO_TOKENIZER, demo_tokenizer
    from ..weights.random_checkpoint import write_random_checkpoint

    with signals_held():  # a stop signal between the two left the folder behind: now delivered after both
        tmp = tempfile.mkdtemp(prefix=f"moshi_mlx_{name}_")
        atexit.register(shutil.rmtree, tmp, True)
    print(f"NOTE: --model {name}: random weights (seed {seed}); {what} produces NOISE", file=sys.stderr)
    path = write_random_checkpoint(preset(name), tmp, seed=seed)
    # the demo's own tokenizer and codec travel with it: the converted folder loads as it is
    cfg_path = Path(tmp) / CONFIG_NAME
    d = json.loads(cfg_path.read_text())
    d.update(tokenizer_name=DEMO_TOKENIZER, mimi_name="random")
    cfg_path.write_text(json.dumps(d, indent=2) + "\n")
    shutil.copyfile(demo_tokenizer(), Path(tmp) / DEMO_TOKENIZER)
    return path


def parse(parser: argparse.ArgumentParser, argv: list[str] | None):
    """parse_args, with a bad command line returned as exit code 2 instead of raised."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as e:
        return None, int(e.code or 0)


def _check_out(args) -> None:
    """--out, --eval-json and --eval-codes checked before anything is converted."""
    if not args.out.strip():
        raise OutputError("--out: empty path")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out: {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise OutputError(f"--out: folder {out} already exists and is not empty; pass --force to overwrite")
    base = out.absolute()
    while not base.exists() and base.parent != base:  # --out may create nested folders
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"--out: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"--out: folder {base} is not writable")
    inputs = [p for p in (args.source, args.config, args.lora_weight, args.hf_repo) if p and os.path.exists(p)]
    for p in inputs:  # the folder an input lives in (or is): converting into it would replace its files
        where = Path(p) if Path(p).is_dir() else Path(p).parent
        if out.is_dir() and os.path.samefile(where, out):
            raise OutputError(
                f"--out: {out} holds the input {p}: converting into it would overwrite the source's "
                "files (config.json, ...), --force or not; give another folder"
            )
    check_outputs(
        [Output("--eval-json", args.eval_json, (".json",), args.force)],
        [("SOURCE", args.source), ("--eval-codes", args.eval_codes), ("--out", args.out)],
    )
    if args.eval_codes is not None:  # a missing or unreadable file, found now rather than after the conversion
        from ..tokens import read_stream_codes

        read_stream_codes(args.eval_codes)


@cli_main
def main(argv: list[str] | None = None) -> int:
    from ..weights.quality import EVAL_FRAMES

    ap = build_parser()
    args = ap.parse_args(argv)
    args.eval = args.eval or any(v is not None for v in (args.eval_frames, args.eval_codes, args.eval_json))
    args.eval_frames = EVAL_FRAMES if args.eval_frames is None else args.eval_frames
    _check_out(args)
    from ..weights.convert import FLOAT_DTYPES, QUALITY_NAME, convert, resolve_source
    from ..weights.hub import offline_mode
    from ..weights.recipes import make_recipe

    if args.quantize and args.q_bits and args.quantize != args.q_bits:
        raise UsageError(f"-q {args.quantize} and --q-bits {args.q_bits} disagree: give one of them")
    bits = args.quantize or args.q_bits
    quantize = args.quantize is not None or args.recipe is not None
    if args.old_dtype is not None:
        raise UsageError(
            "convert's --dtype is now --weights-dtype (the dtype the file stores); --dtype means "
            "the dtype a model computes in, in the CLIs that run one"
        )
    if not quantize and (
        args.q_bits is not None or args.q_group_size is not None or args.q_mode != ap.get_default("q_mode")
    ):
        raise UsageError("--q-bits/--q-group-size/--q-mode need -q (or --quant-predicate)")
    recipe = make_recipe(args.recipe, bits, args.q_group_size, args.q_mode) if quantize else None
    if args.model is not None:
        if args.source or args.hf_repo:
            raise UsageError("--model replaces SOURCE/--hf-repo: give one of them")
        if args.lora_weight:
            raise UsageError(f"{args.model} is built in memory: it takes no --lora-weight")
        args.source = str(_demo_checkpoint(args.model, args.seed))
    with offline_mode(args.offline):
        info = resolve_source(args.source, hf_repo=args.hf_repo, config=args.config, lora=args.lora_weight)
    # the demo's checkpoint lives in a temporary folder, removed at exit: its path says nothing
    shown = (
        f"--model {args.model} (config: preset {args.model})" if args.model else f"{info.weights} (config: {info.how})"
    )
    print(f"source: {shown}")
    if recipe is not None:
        print(f"recipe: {recipe.name}: {recipe.description}")
    from tqdm import tqdm

    bars: list = []  # made once the plan is known, so an early error prints one line only

    def start(total: int) -> None:
        bars.append(
            tqdm(
                total=total,
                desc="convert",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=args.quiet,
                file=sys.stderr,
            )
        )

    try:
        res = convert(
            info,
            args.out,
            recipe=recipe,
            dtype=FLOAT_DTYPES[args.weights_dtype],
            force=args.force,
            copy_assets=not args.no_assets,
            progress=lambda n: bars and bars[0].update(n),
            on_start=start,
        )
    finally:
        for bar in bars:
            bar.close()
    print(
        f"wrote {res.weights} ({res.out_bytes / 2**30:.2f} GiB from {res.source_bytes / 2**30:.2f} GiB, "
        f"{res.tensors} tensors, {res.seconds:.1f} s): {res.summary}"
    )
    print(f"wrote {res.config}")
    if res.copied:
        print(f"copied {', '.join(res.copied)}")
    note = res.missing_note()
    if note is not None:
        print(note, file=sys.stderr)
    if args.eval:
        from ..weights.quality import evaluate_cli

        evaluate_cli(
            info.weights,
            [res.out_dir],
            frames=args.eval_frames,
            codes=args.eval_codes,
            json_path=Path(args.eval_json) if args.eval_json else res.out_dir / QUALITY_NAME,
            seed=args.seed,
            ref_config=info.cfg,
            reference_name=f"--model {args.model}" if args.model else None,
        )
    return 0


run = main  # the name the tests and older callers use
parser = build_parser  # every tool has `parser()` (tests/cli/test_conventions.py walks them)
