"""The model, sampling and PersonaPlex flags of the tools that run a model, and what reads
them: the flags become `moshi_mlx.load()`'s keyword arguments (`load_kwargs`) and
`Model.generator`'s (`sampling_kwargs`). Here, not in runtime/, because only the tools have
an argparse namespace and speak in flags; runtime/ takes typed parameters (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Callable

from ..constants import CONVERT_COMMAND, DEFAULT_PRESET, DEFAULT_SEED
from ..errors import UsageError
from ..models.config import PRESETS
from ..models.persona import DEFAULT_PERSONA
from ..models.sampling import REFERENCE_DEFAULTS, SamplingOptions
from ..runtime.loading import DEMO_MODELS, DTYPES, load
from ..runtime.model import Model
from ..validation import float_arg, int_arg, seed_arg
from .flags import (
    add_demo_model_arg,
    add_lm_config_arg,
    add_lora_arg,
    add_mimi_backend_arg,
    add_offline_arg,
    add_quantized_arg,
)

DTYPE_HELP = (
    "dtype the model computes in: its float weights and activations (auto: the backend's fast format, "
    "i.e. weights as stored; on a CPU float32 activations for quantized weights and float32 copies of "
    "bf16 layers where memory allows)"
)
PERSONA = ("voice", "persona")  # PersonaPlex's prompt, passed with the sampling options


def add_dtype_arg(ap, default: str = "auto") -> None:
    """`--dtype`, with the same meaning in every CLI that runs a model."""
    ap.add_argument("--dtype", choices=DTYPES, default=default, help=DTYPE_HELP)


def add_model_args(
    ap: argparse.ArgumentParser,
    *,
    default_repo: str | None = None,
    demo_models: tuple[str, ...] = DEMO_MODELS,
    codec: bool = True,
    quantized_help: str | None = None,
) -> None:
    """The model flags (shared ones from cli/flags.py). default_repo: what --help names as
    the default model; codec=False leaves out --mimi-weight/--mimi-backend (a text model has no
    codec: the flags would do nothing)."""
    if default_repo is None:  # the default preset's repos (models/config.py PRESETS)
        default_repo = f"{PRESETS[DEFAULT_PRESET][1]['bf16'][0]}, -q8 or -q4 following -q"
    g = ap.add_argument_group("model")
    add_demo_model_arg(g, demo_models, "--hf-repo")
    g.add_argument(
        "--hf-repo", help=f"Hugging Face repo with the model, or a local model folder (default: {default_repo})"
    )
    add_lm_config_arg(
        g,
        "config.json of the LM or a preset name (default: the repo's, else the "
        "preset known for the repo or fitting the weights)",
    )
    g.add_argument(
        "--moshi-weight",
        "--moshi-weights",
        dest="moshi_weight",
        help="LM weights: a local .safetensors (its folder's config.json, Mimi and tokenizer are used "
        f"when present), a folder from {CONVERT_COMMAND}, or a file name in the repo",
    )
    add_lora_arg(g)
    if codec:
        g.add_argument(
            "--mimi-weight",
            "--mimi-weights",
            dest="mimi_weight",
            help="Mimi weights (local path or name in the repo; 'random': seeded noise codec for smoke tests)",
        )
    g.add_argument(
        "--tokenizer", help="SentencePiece text tokenizer (local path or name in the repo; 'none': show token ids)"
    )
    add_quantized_arg(
        g,
        quantized_help or "pick the repo/file of that quantization; the file's own quantization is always what is used",
    )
    if codec:
        add_mimi_backend_arg(g)
    add_dtype_arg(g)
    add_offline_arg(g)


# each SamplingOptions flag's argparse type: the shared checks, naming the flag
_FLAG_TYPES = {
    "temp": lambda f: float_arg(f, lo=0.0),
    "temp_text": lambda f: float_arg(f, lo=0.0),
    "top_k": lambda f: int_arg(f, lo=0),
    "top_k_text": lambda f: int_arg(f, lo=0),
    "top_p": lambda f: float_arg(f, lo=0.0, hi=1.0),
    "top_p_text": lambda f: float_arg(f, lo=0.0, hi=1.0),
    "cfg_coef": lambda f: float_arg(f),
    "seed": lambda f: seed_arg(f),
}


# a flag's help where the command line's meaning is not the API keyword's (`sampling_options`)
_FLAG_HELP = {
    "temp": "temperature of text and audio, as upstream moshi_mlx's --temp (0 = greedy everywhere); "
    "--temp-text gives the text's alone",
    "temp_text": "text temperature, over --temp's (0 = greedy)",
}


def add_sampling_args(ap: argparse.ArgumentParser) -> None:
    """A flag per `SamplingOptions` field (its help text), each checked for type and range by
    `moshi_mlx.validation` (one line naming the flag: `--temp nan`, `--seed -1`, `--top-p 2`
    are refused)."""
    d = REFERENCE_DEFAULTS
    g = ap.add_argument_group(
        f"sampling (defaults: the model's lm_gen_config, else audio {d['temp']}/top-k "
        f"{d['top_k']}, text {d['temp_text']}/top-k {d['top_k_text']})"
    )
    for f in dataclasses.fields(SamplingOptions):
        if not f.metadata["flag"]:
            continue
        flag = "--" + f.name.replace("_", "-")
        help = _FLAG_HELP.get(f.name, f.metadata["help"])
        extra = (
            dict(default=f.default, help=f"{help} (default {f.default})") if f.default is not None else dict(help=help)
        )
        g.add_argument(flag, type=_FLAG_TYPES[f.name](flag), **extra)


def add_persona_args(ap: argparse.ArgumentParser) -> None:
    """PersonaPlex's `--voice` / `--persona`, for the tools that run a conversation model
    (local, run-inference, web); a translation tool has no use for them (docs/cli.md)."""
    p = ap.add_argument_group(
        "PersonaPlex (--hf-repo nvidia/personaplex-7b-v1): the voice and role given before "
        "the conversation (docs/personaplex.md)"
    )
    p.add_argument(
        "--voice",
        metavar="NAME|FILE",
        help="voice prompt: a preset (NATF0-3, NATM0-3, VARF0-4, VARM0-4), a stored .pt voice or an audio file",
    )
    p.add_argument(
        "--persona",
        metavar="TEXT",
        help=f"the role, e.g. 'You are a patient French teacher.' (default: NVIDIA's, {DEFAULT_PERSONA!r}; '' for none)",
    )


def model_inputs(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """The local files the model flags read, as (flag, path): an output at one of these
    paths is refused before any work (`outputs.check_outputs`)."""
    flags = (
        ("--moshi-weight", "moshi_weight"),
        ("--mimi-weight", "mimi_weight"),
        ("--lm-config", "lm_config"),
        ("--lora-weight", "lora_weight"),
        ("--tokenizer", "tokenizer"),
        ("--hf-repo", "hf_repo"),
        ("--voice", "voice"),
    )
    return [
        (flag, getattr(args, name, None))
        for flag, name in flags
        if getattr(args, name, None) and os.path.exists(getattr(args, name))
    ]


def load_kwargs(args: argparse.Namespace) -> dict:
    """The model flags (`add_model_args`) as `load()`'s keyword arguments."""
    get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
    source = get("model") or get("hf_repo")
    if get("model") and (get("hf_repo") or get("moshi_weight")):
        raise UsageError("--model replaces --hf-repo/--moshi-weight: give one of them")
    return dict(
        source=source,
        weights=get("moshi_weight"),
        config=get("lm_config"),
        lora=get("lora_weight"),
        mimi=get("mimi_weight"),
        tokenizer=get("tokenizer"),
        quantized=get("quantized"),
        dtype=get("dtype", "auto"),
        mimi_backend=get("mimi_backend", "auto"),
        offline=bool(get("offline", False)),
        seed=DEFAULT_SEED if get("seed") is None else get("seed"),
    )


def use_default_repo(args: argparse.Namespace, repo: str, refuse_quantized_for: str | None = None) -> None:
    """With no model flag (--hf-repo, --moshi-weight, --model), the tool's own `repo`. `-q`
    picks among Moshi's repos; a tool whose repo has no q4/q8 twins says, in one error line,
    to give a converted folder instead, naming what it is for (`refuse_quantized_for`)."""
    if args.hf_repo or args.moshi_weight or args.model:
        return
    if args.quantized and refuse_quantized_for:
        raise UsageError(
            f"-q picks Moshi's repos; for {refuse_quantized_for} give --hf-repo "
            f"(e.g. a q4/q8 folder made by {CONVERT_COMMAND})"
        )
    args.hf_repo = repo


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling flags (`add_sampling_args`) as the `SamplingOptions` of `Model.generator` & co.
    `--temp` sets the text's temperature too unless `--temp-text` is given, as upstream's
    run_inference --temp did (its command lines rely on it: Kyutai's STT README runs
    `run_inference ... --temp 0` for a greedy transcript); the API's `temp` is the audio's,
    as the reference LMGen's."""
    given = {k: getattr(args, k) for k in SamplingOptions.names() if getattr(args, k, None) is not None}
    if "temp" in given:
        given.setdefault("temp_text", given["temp"])
    return SamplingOptions.of(**given)


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """The sampling flags as `Model.generator`'s (and `respond`'s, `conversation`'s) keywords:
    `options` (`sampling_options`), and PersonaPlex's voice / persona where given."""
    return {
        "options": sampling_options(args),
        **{k: getattr(args, k) for k in PERSONA if getattr(args, k, None) is not None},
    }


def _needs_persona(flags: list[str], check: Callable | None) -> Callable:
    """`check`, then: `--voice` / `--persona` refuse a model that is not PersonaPlex before its
    weights are read."""

    def both(cfg, name: str) -> None:
        if check is not None:
            check(cfg, name)
        if not cfg.is_persona:
            raise UsageError(
                f"{' and '.join(flags)} {'need' if len(flags) > 1 else 'needs'} a PersonaPlex model "
                f"(--hf-repo nvidia/personaplex-7b-v1); {name} is a {cfg.kind} model ({cfg.model_type})"
            )

    return both


def load_session(
    args: argparse.Namespace, with_codec: bool = True, listens: bool = False, check: Callable | None = None
) -> Model:
    """Resolve the model flags (see `add_model_args`) into a ready model (with_codec=False:
    no Mimi, for text generation; listens / check: refuse a model before reading weights, see
    `load`); its
    warnings go to stderr, one line each. A missing --voice file is found before the model loads
    (minutes for PersonaPlex 7B)."""
    if getattr(args, "voice", None) is not None:
        from ..runtime.persona import check_voice_spec

        check_voice_spec(args.voice)
    flags = [f for f, dest in (("--voice", "voice"), ("--persona", "persona")) if getattr(args, dest, None) is not None]
    if flags:  # refused from the config, in the flags' words (Model.generator says it in the API's)
        check = _needs_persona(flags, check)
    model = load(**load_kwargs(args), codec=with_codec, listens=listens, check=check)
    say_loaded(model)  # it names a Mimi taken from another repo's cache too: no NOTE line repeats that
    return model


def say_loaded(model) -> None:
    """What was loaded, one line on stderr (stdout carries the tools' data: a transcript, text),
    the same in every tool: `loaded REPO-OR-FOLDER: WEIGHTS (FORMAT), Mimi ..., tokenizer ...;
    COMPUTE` (`runtime.loading.describe_loaded`), a demo model's as a NOTE that it makes noise;
    then its warnings. `model`: a `Model` or a `TtsSession`."""
    print(f"NOTE: {model.description}" if model.is_demo else f"loaded {model.description}", file=sys.stderr)
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
