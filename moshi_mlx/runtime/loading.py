"""`load()`: a ready model (LM in the backend's fast compute format, Mimi, tokenizer, config)
from one name, and the command-line flags that lead to it.

Every front end ends here: `moshi_mlx.load(...)` with keyword arguments, the CLIs through
`load_session(args)` (flags -> the same keyword arguments, `load_kwargs`). Which files make
up the model is decided by the one resolver, `weights.resolve.resolve_model`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from importlib import resources
from typing import Callable

from ..constants import CONVERT_COMMAND, DEFAULT_PRESET, DEFAULT_SEED, DEMO_MODEL
from ..errors import UsageError
from ..models.config import PRESETS
from ..models.persona import DEFAULT_PERSONA
from ..models.sampling import REFERENCE_DEFAULTS, SamplingOptions
from ..validation import float_arg, int_arg, seed_arg
from .flags import (
    MIMI_BACKENDS,
    add_demo_model_arg,
    add_lm_config_arg,
    add_lora_arg,
    add_mimi_backend_arg,
    add_offline_arg,
    add_quantized_arg,
)
from .model import Model

DEMO_TOKENIZER = "demo_tokenizer.model"
# Moshi, speech-to-text, Helium, translation (Hibiki-Zero's shape), PersonaPlex
DEMO_MODELS = (DEMO_MODEL, "random-tiny-stt", "random-tiny-helium", "random-tiny-hibiki-zero", "random-tiny-persona")
COMPUTE = ("auto", "stored")
DTYPES = ("auto", "float32", "bfloat16", "float16")
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
    """The model flags (shared ones from runtime/flags.py). default_repo: what --help names as
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
        extra = (
            dict(default=f.default, help=f"{f.metadata['help']} (default {f.default})")
            if f.default is not None
            else dict(help=f.metadata["help"])
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
    """The sampling flags (`add_sampling_args`) as the `SamplingOptions` of `Model.generator` & co."""
    return SamplingOptions.of(
        **{k: getattr(args, k) for k in SamplingOptions.names() if getattr(args, k, None) is not None}
    )


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """The sampling flags as `Model.generator`'s (and `respond`'s, `conversation`'s) keywords:
    `options` (`sampling_options`), and PersonaPlex's voice / persona where given."""
    return {
        "options": sampling_options(args),
        **{k: getattr(args, k) for k in PERSONA if getattr(args, k, None) is not None},
    }


def _float_dtype(name):
    import mlx.core as mx

    if isinstance(name, mx.Dtype):  # before `==`: an mlx Dtype compared with None raises TypeError
        if name in (mx.float32, mx.bfloat16, mx.float16):
            return name
    elif name is None or name == "auto":
        return None
    if not isinstance(name, str):
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)} (or an mlx float dtype), got {name!r}")
    if name not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}[name]


def load(
    source: str | os.PathLike | None = None,
    *,
    quantized: int | None = None,
    weights: str | os.PathLike | None = None,
    config=None,
    lora: str | os.PathLike | None = None,
    mimi: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    dtype="auto",
    compute: str = "auto",
    mimi_backend: str = "auto",
    offline: bool = False,
    seed: int = DEFAULT_SEED,
    codec: bool = True,
    listens: bool = False,
    check: Callable | None = None,
) -> Model:
    """Load a model, ready to talk to: the one entry point for scripts (see `Model`).

    Args:
        source: A Hub repo ("kyutai/moshiko-mlx-q4"), a local model folder or weights file,
            a preset name ("moshika": its Hub repo for `quantized`), or "random-tiny" (the
            offline demo model: random weights, it produces noise). Default: Moshiko at
            `quantized`.
        quantized: 4, 6 or 8 picks the repo/file of that quantization (default: bf16).
        weights: Overrides the LM weights file.
        config: Overrides its config (an LmConfig, a preset name or a config.json).
        lora: A LoRA fine-tune's adapters file, fused into the weights at load (the config
            must be the fine-tune's; default: the adapters its config.json names beside it).
        mimi: Overrides the Mimi checkpoint ("random": a seeded noise codec).
        tokenizer: Overrides the text tokenizer ("none": token ids shown as ‹id›).
        dtype: "auto" (weights as stored) or a float dtype for weights and activations.
        compute: "auto" puts the LM in the backend's fast compute format (`prepare_lm`);
            "stored" leaves it as loaded.
        mimi_backend: "auto" (MLX on a GPU, rustymimi on a CPU when installed), "mlx" or
            "rustymimi".
        offline: Files come from the local Hugging Face cache only.
        seed: Seed of random weights (demo model, random Mimi); the CLIs pass their `--seed`,
            so by default a command and a script build the same demo weights.
        codec: False loads no Mimi (`Model.codec` is None): text generation needs none.
        listens: Refuse a model that takes no audio (a text model) once its config is known,
            before its weights are read (a live loop or a server has no use for one).
        check: Called as `check(cfg, name)` once the model's config is known, before any
            weights are read, and before a Hub repo's weights are downloaded when its config
            does not depend on them (`resolve_model`'s `check`): raise a UsageError to refuse
            the model (a tool that needs one kind of model says so at once, not after a
            download of GBs or the minutes a 7B model takes to load).

    Returns:
        The loaded `Model` (LM, codec, tokenizer and their config).

    Raises:
        UsageError: A bad argument, or files that are missing or do not fit together (one
            line naming the problem).
    """
    from ..validation import seed as check_seed
    from ..weights.hub import offline_mode
    from .workers import clear_on_thread_end

    clear_on_thread_end()  # a script's own thread: its MLX state emptied before it ends
    seed = check_seed("seed", seed)
    if compute not in COMPUTE:
        raise UsageError(f"compute must be 'auto' (the backend's fast format) or 'stored' (as loaded), got {compute!r}")
    if mimi_backend not in MIMI_BACKENDS:
        raise UsageError(f"mimi_backend must be one of {', '.join(MIMI_BACKENDS)}, got {mimi_backend!r}")
    if mimi_backend == "rustymimi":
        from ..models.mimi_rust import require_rustymimi

        require_rustymimi()
    if quantized not in (None, 4, 6, 8):
        raise UsageError(f"quantized must be 4, 6, 8 or None (bf16), got {quantized!r}")
    float_dtype = _float_dtype(dtype)
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"source must be a repo id, a path or a model name (a str), got {type(source).__name__}")
    if source is not None and not str(source).strip():
        raise UsageError("source is empty: give a repo id, a model folder or file, or a model name")
    if source is not None and str(source) in DEMO_MODELS:
        # the demo model is built in memory: a file given with it would be silently unused
        given = [
            k
            for k, v, ok in (
                ("quantized", quantized, ()),  # -q: no q4/q8 file to pick (it ran unquantized)
                ("weights", weights, ()),
                ("config", config, ()),
                ("lora", lora, ()),
                ("mimi", mimi, ("random",)),
                ("tokenizer", tokenizer, ("none",)),
            )
            if v is not None and v not in ok
        ]
        if given:
            raise UsageError(f"{source} is built in memory: it takes no {'/'.join(given)}")
        if mimi_backend == "rustymimi":
            raise UsageError(
                f"{source}: the demo model's tiny codec runs on MLX only (rustymimi reads the published "
                'Mimi); use mimi_backend="auto" or mimi_backend="mlx"'
            )
        checks = _checks(listens, check)
        if checks:
            from ..models.config import preset

            for c in checks:
                c(preset(str(source)), str(source))
        return _demo(str(source), seed, compute, float_dtype, codec, tokenizer == "none")
    with offline_mode(offline):
        return _load(
            source,
            quantized,
            weights,
            config,
            lora,
            mimi,
            tokenizer,
            float_dtype,
            compute,
            mimi_backend,
            seed,
            codec,
            _checks(listens, check),
        )


def _checks(listens: bool, check: Callable | None) -> list[Callable]:
    """What `load` asks of the config before reading weights: the caller's `check` first (it
    names the kind of model the tool needs), then `listens`."""
    return [c for c in (check, _check_listens if listens else None) if c is not None]


def _check_listens(cfg, name: str) -> None:
    if cfg.user_q == 0:
        raise UsageError(
            f"{name} is a text model (it takes no audio): it cannot hold a spoken conversation; "
            "use moshi-helium or Model.text_stream()"
        )


def compute_format(lm, compute: str, dtype=None):
    """The backend's fast compute format for a freshly loaded LM (`models.backend.prepare_lm`,
    applied in place) unless `compute="stored"` (then None: as loaded). With an explicit
    `dtype`, activations stay in that dtype and no layer is upcast."""
    if compute == "stored":
        return None
    from ..models.backend import prepare_lm

    auto = dtype is None
    return prepare_lm(lm, activation="auto" if auto else "stored", upcast="auto" if auto else False)


def _demo(name: str, seed: int, compute: str, dtype, with_codec: bool = True, ids_only: bool = False) -> Model:
    from ..models import random_lm, random_mimi
    from ..models.config import preset
    from .codec import MimiFrameCodec
    from .transcript import PlaceholderTokenizer, TextTokenizer

    cfg = preset(name)
    lm = random_lm(cfg, seed=seed % (2**31))
    if dtype is not None:
        lm.set_dtype(dtype)
    fmt = compute_format(lm, compute, dtype)
    n = max(cfg.user_q, cfg.dep_q, 1)
    codec = None
    if with_codec:
        mimi = random_mimi(
            seed=seed % (2**31), num_codebooks=n, config=_random_mimi_config(cfg) or _persona_demo_mimi(cfg)
        )
        codec = MimiFrameCodec(mimi, n_encode=cfg.user_q)
    tokenizer = PlaceholderTokenizer() if ids_only else TextTokenizer(demo_tokenizer())
    return Model(
        cfg,
        lm,
        codec,
        tokenizer,
        f"{name} demo model (random weights: it produces NOISE)",
        is_demo=True,
        compute=fmt,
        mimi_backend="mlx",
    )


def demo_tokenizer() -> str:
    """The demo models' text tokenizer: a real SentencePiece model, tiny (512 pieces; made by
    scripts/make_demo_tokenizer.py), so they take and show text as the published ones do."""
    return str(resources.files("moshi_mlx") / "assets" / DEMO_TOKENIZER)


def demo_mimi_config() -> str:
    """The demo models' tiny Mimi config (configs/mimi-tiny.json)."""
    return str(resources.files("moshi_mlx") / "configs" / "mimi-tiny.json")


def _random_mimi_config(cfg) -> str | None:
    """The demo model's tiny Mimi config for an LM of its codebook size (a converted demo
    model), else None (the published architecture)."""
    import json

    tiny = demo_mimi_config()
    with open(tiny) as f:
        bins = json.load(f)["quantizer"]["bins"]
    return tiny if cfg.card == bins and cfg.card != 2048 else None


def _persona_demo_mimi(cfg) -> dict | None:
    """The PersonaPlex demo's codec: the tiny Mimi with 2048 codes (its prompts use codes up to 2008)."""
    import json

    if not cfg.is_persona:
        return None
    with open(demo_mimi_config()) as f:
        d = json.load(f)
    d["quantizer"]["bins"] = cfg.card
    return d


def _check_codec_fits(mimi, cfg, name: str) -> None:
    from ..weights.errors import WeightsError

    if int(mimi.cardinality) != cfg.card:
        raise WeightsError(
            f"{name} has {mimi.cardinality} entries per codebook but the LM expects card {cfg.card}: "
            "this Mimi does not belong to this model"
        )


def _load(
    source,
    quantized,
    weights,
    config,
    lora,
    mimi,
    tokenizer,
    dtype,
    compute,
    mimi_backend,
    seed,
    with_codec: bool = True,
    checks: list[Callable] = (),
) -> Model:
    from ..models import load_mimi, random_mimi
    from ..models.mimi import best_backend
    from ..weights.lm_loader import load_resolved
    from ..weights.resolve import resolve_model
    from .codec import MimiFrameCodec
    from .transcript import PlaceholderTokenizer, TextTokenizer

    name = str(source) if source is not None else str(weights or "this model")

    def check(cfg) -> None:  # run by the resolver once the config is known: no weights downloaded or read yet
        for c in checks:
            c(cfg, name)

    files = resolve_model(
        source,
        weights=weights,
        config=config,
        mimi=mimi,
        tokenizer=tokenizer,
        quantized=quantized,
        lora=lora,
        check=check if checks else None,
    )
    cfg = files.cfg
    # the tokenizer and the Mimi file before the LM's weights: one missing or damaged is said
    # at once, not after the seconds a 7B model takes to load
    tok = PlaceholderTokenizer() if files.tokenizer == "none" else TextTokenizer(files.companion("tokenizer"))
    mimi_path = files.companion("mimi") if with_codec and files.mimi != "random" else None
    lm = load_resolved(files, dtype=dtype)
    fmt = compute_format(lm, compute, dtype)
    backend = best_backend() if mimi_backend == "auto" else mimi_backend
    n_user, n_out = cfg.user_q, cfg.dep_q
    if not with_codec:
        codec, mimi_desc, backend = None, "no Mimi", "none"
    elif files.mimi == "random":  # seeded random weights (noise) of the published Mimi, or the demo's if the LM fits it
        if mimi_backend == "rustymimi":
            raise UsageError('mimi="random" runs on MLX only; use mimi_backend="auto" or mimi_backend="mlx"')
        m = random_mimi(seed=seed % (2**31), num_codebooks=max(n_user, n_out, 1), config=_random_mimi_config(cfg))
        _check_codec_fits(m, cfg, "the random Mimi")
        codec, mimi_desc, backend = MimiFrameCodec(m, n_encode=n_user), "random Mimi (NOISE)", "mlx"
    else:
        if backend == "rustymimi":
            enc = load_mimi(mimi_path, num_codebooks=max(n_user, 1), backend="rustymimi")
            dec = load_mimi(mimi_path, num_codebooks=n_out, backend="rustymimi") if n_out else None
            codec = MimiFrameCodec(enc, dec, n_encode=n_user)
        else:
            m = load_mimi(mimi_path, num_codebooks=max(n_user, n_out, 1))
            _check_codec_fits(m, cfg, str(mimi_path))
            codec = MimiFrameCodec(m, n_encode=n_user)
        mimi_desc = f"Mimi via {backend}"
    desc = (
        f"LM {files.weights.name} ({cfg.model_type or 'moshi'}, "
        f"{fmt.describe() if fmt is not None else 'compute as stored'}), {mimi_desc}"
    )
    return Model(cfg, lm, codec, tok, desc, compute=fmt, mimi_backend=backend, files=files)


# ---- the CLIs' entry points ---------------------------------------------------------------


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
        from .persona import check_voice_spec

        check_voice_spec(args.voice)
    flags = [f for f, dest in (("--voice", "voice"), ("--persona", "persona")) if getattr(args, dest, None) is not None]
    if flags:  # refused from the config, in the flags' words (Model.generator says it in the API's)
        check = _needs_persona(flags, check)
    model = load(**load_kwargs(args), codec=with_codec, listens=listens, check=check)
    for w in model.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return model


__all__ = [
    "load",
    "load_session",
    "load_kwargs",
    "sampling_options",
    "sampling_kwargs",
    "add_model_args",
    "add_sampling_args",
    "add_dtype_arg",
    "compute_format",
    "PRESETS",
]
