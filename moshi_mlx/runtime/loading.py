"""`load()`: a ready model (LM in the backend's fast compute format, Mimi, tokenizer, config)
from one name.

Every front end ends here: `moshi_mlx.load(...)` with keyword arguments, the CLIs through
cli/model_args.py (their flags -> the same keyword arguments). Which files make up the model
is decided by the one resolver, `weights.resolve.resolve_model`.
"""

from __future__ import annotations

import os
from importlib import resources
from typing import Callable

from ..constants import DEFAULT_SEED, DEMO_MODEL, MIMI_BACKENDS
from ..errors import UsageError
from ..models.config import PRESETS
from .model import Model

DEMO_TOKENIZER = "demo_tokenizer.model"
# Moshi, speech-to-text, Helium, translation (Hibiki-Zero's shape), PersonaPlex
DEMO_MODELS = (DEMO_MODEL, "random-tiny-stt", "random-tiny-helium", "random-tiny-hibiki-zero", "random-tiny-persona")
COMPUTE = ("auto", "stored")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_mimi_backend(mimi_backend: str) -> None:
    """`load()`'s and `load_tts_session`'s mimi_backend, refused before any work: a name not in
    MIMI_BACKENDS (the one list, --mimi-backend's choices too), or rustymimi not installed."""
    if mimi_backend not in MIMI_BACKENDS:
        raise UsageError(f"mimi_backend must be one of {', '.join(MIMI_BACKENDS)}, got {mimi_backend!r}")
    if mimi_backend == "rustymimi":
        from ..models.mimi_rust import require_rustymimi

        require_rustymimi()


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
    check_mimi_backend(mimi_backend)
    if quantized not in (None, 4, 6, 8):
        raise UsageError(f"quantized must be 4, 6, 8 or None (bf16), got {quantized!r}")
    float_dtype = _float_dtype(dtype)
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"source must be a repo id, a path or a model name (a str), got {type(source).__name__}")
    if source is not None and not str(source).strip():
        raise UsageError("source is empty: give a repo id, a model folder or file, or a model name")
    from .tts import DEMO_MODEL as TTS_DEMO

    if source is not None and str(source) == TTS_DEMO:  # a preset with no weights on the Hub: said as what it is
        raise UsageError(f"{TTS_DEMO} is the text-to-speech demo model: {_tts_call(source, None)}")
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
        checks = _checks(listens, check, source, weights)
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
            _checks(listens, check, source, weights),
        )


def _checks(listens: bool, check: Callable | None, source=None, weights=None) -> list[Callable]:
    """What `load` asks of the config before reading weights: the caller's `check` first (it
    names the kind of model the tool needs), then `listens`, then that it is no TTS model
    (one `load_tts_session` loads: a `Model` of one could only make noise)."""

    def not_tts(cfg, name: str) -> None:
        if cfg.kind == "text-to-speech":
            raise UsageError(f"{name} is a text-to-speech model: {_tts_call(source, weights)}")

    return [c for c in (check, _check_listens if listens else None, not_tts) if c is not None]


def _tts_call(source, weights) -> str:
    """What loads a TTS model named as `load()` was given it, for its refusal."""
    from .tts import DEMO_MODEL as TTS_DEMO

    if source is not None and str(source) == TTS_DEMO:
        args = f'model="{TTS_DEMO}"'
    else:
        given = (("hf_repo", source), ("moshi_weight", weights))
        args = ", ".join(f'{k}="{v}"' for k, v in given if v is not None)
    return f"load it with moshi_mlx.runtime.tts.load_tts_session({args}) (on the command line: moshi-tts)"


def _default_repo_name(quantized: int | None) -> str:
    """The repo `load()` without a source reads (`-q 4` alone: kyutai/moshiko-mlx-q4), for the
    refusals that name the model; a quantization it lacks is the resolver's to refuse."""
    from ..weights.resolve import default_repo

    try:
        return default_repo(quantized)[0]
    except UsageError:
        return "this model"


def _check_listens(cfg, name: str) -> None:
    if cfg.user_q == 0:
        raise UsageError(
            f"{name} is a {cfg.kind} model (it takes no audio): it cannot hold a spoken conversation; {_USE[cfg.kind]}"
        )


# what a model that takes no audio is used with (`LmConfig.kind`: a text or a text-to-speech model)
_USE = {
    "text": "use moshi-helium or Model.text_stream()",
    "text-to-speech": "use moshi-tts or runtime.tts.synthesize()",
}


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

    name = str(source) if source is not None else str(weights or _default_repo_name(quantized))

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
        mimi_desc = mimi_source(files, backend)
    desc = describe_loaded(files, mimi_desc, fmt.describe() if fmt is not None else "compute as stored")
    return Model(cfg, lm, codec, tok, desc, compute=fmt, mimi_backend=backend, files=files)


def mimi_source(files, backend: str) -> str:
    """'Mimi NAME via BACKEND': the codec's file as it was named (a name in the repo or
    folder, or the caller's path), and the cache it came from when that is another repo's."""
    return f"Mimi {files.mimi} via {backend}" + (f" ({files.mimi_note})" if files.mimi_note else "")


def describe_loaded(files, mimi: str, compute: str, quantized_at_load: int | None = None) -> str:
    """What was loaded, in one line (`Model.description`, `TtsSession.description`; every tool
    prints it, `cli.model_args.say_loaded`): the repo or folder, the weights file and how it
    stores the LM, where the Mimi (`mimi`: `mimi_source`, 'random Mimi (NOISE)' or 'no Mimi')
    and the tokenizer came from, then the compute format."""
    tok = "no tokenizer (token ids)" if files.tokenizer == "none" else f"tokenizer {files.tokenizer}"
    stored = files.stored_format() + (f", quantized to {quantized_at_load} bits at load" if quantized_at_load else "")
    return f"{files.where}: {files.weights.name} ({stored}), {mimi}, {tok}; {compute}"


__all__ = [
    "load",
    "compute_format",
    "DEMO_MODELS",
    "DTYPES",
    "PRESETS",
]
