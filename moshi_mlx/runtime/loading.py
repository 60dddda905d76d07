"""Everything a front end needs to get a model running, from command-line flags.

One set of flags for every CLI (upstream's names kept, so habits carry over) and one
function that resolves them: a Hub repo or local files for the LM, its config, Mimi and
the text tokenizer, or the offline `random-tiny` demo model.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from importlib import resources

import mlx.core as mx

from ..models import LmConfig, LmGen, load_lm, load_mimi, random_lm, random_mimi
from ..models.backend import prepare_lm
from ..models.config import preset, preset_for_repo
from ..models.mimi import best_backend
from ..weights.errors import WeightsError
from ..weights.hub import hf_get, hf_get_optional
from .codec import FrameCodec
from .transcript import PlaceholderTokenizer, TextTokenizer

# -q -> (default repo, default weight file), as upstream's `moshi_mlx.local`
DEFAULT_REPOS = {
    None: ("kyutai/moshiko-mlx-bf16", "model.safetensors"),
    8: ("kyutai/moshiko-mlx-q8", "model.q8.safetensors"),
    4: ("kyutai/moshiko-mlx-q4", "model.q4.safetensors"),
}
DEFAULT_MIMI = "tokenizer-e351c8d8-checkpoint125.safetensors"
DEFAULT_TOKENIZER = "tokenizer_spm_32k_3.model"
DEMO_MODELS = ("random-tiny",)


def add_model_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("model")
    g.add_argument("--hf-repo", help="Hugging Face repo with the model (default: kyutai/moshiko-mlx-bf16, "
                   "-q8 or -q4 following -q)")
    g.add_argument("--lm-config", help="config.json of the LM (default: the repo's, or the Moshi 7B preset)")
    g.add_argument("--moshi-weight", "--moshi-weights", dest="moshi_weight",
                   help="LM weights: a local .safetensors (its folder's config.json, Mimi and tokenizer are used "
                        "when present), a folder from moshi_mlx.convert, or a file name in the repo")
    g.add_argument("--mimi-weight", "--mimi-weights", dest="mimi_weight",
                   help="Mimi weights (local path or name in the repo; 'random': seeded noise codec for smoke tests)")
    g.add_argument("--tokenizer", help="SentencePiece text tokenizer (local path or name in the repo; 'none': show "
                   "token ids, for models without one such as converted demo models)")
    g.add_argument("-q", "--quantized", type=int, choices=(4, 8),
                   help="pick the repo/file of that quantization; the file's own quantization is always what is used")
    g.add_argument("--model", choices=DEMO_MODELS,
                   help="a seeded random-weight model of the real architecture at tiny size, created in memory with "
                        "no download. It produces NOISE: for smoke tests, benchmarks and offline demos")
    g.add_argument("--mimi-backend", choices=("auto", "mlx", "rustymimi"), default="auto",
                   help="codec implementation (auto: MLX on a GPU, rustymimi on a CPU when installed)")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="float dtype of weights and activations (auto: weights as stored; activations "
                        "float32 for quantized models on a CPU, else the weights' dtype)")


def add_sampling_args(ap: argparse.ArgumentParser) -> None:
    g = ap.add_argument_group("sampling (defaults: the model's lm_gen_config, else audio 0.8/top-k 250, text 0.7/top-k 25)")
    g.add_argument("--temp", type=float, help="audio temperature (0 = greedy)")
    g.add_argument("--temp-text", type=float, help="text temperature (0 = greedy)")
    g.add_argument("--top-k", type=int, help="audio top-k")
    g.add_argument("--top-k-text", type=int, help="text top-k")
    g.add_argument("--top-p", type=float, help="audio top-p (nucleus)")
    g.add_argument("--top-p-text", type=float, help="text top-p (nucleus)")
    g.add_argument("--cfg-coef", type=float, help="classifier-free guidance coefficient (conditioned models, e.g. Hibiki)")
    g.add_argument("--seed", type=int, default=299792458, help="sampling seed")


def _dtype(name: str):
    """Weights dtype to load with: as stored for "auto" (the compute format is then chosen
    per backend by `prepare_lm`), else the requested one (weights and activations)."""
    if name == "auto":
        return None
    return {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}[name]


@dataclass
class Session:
    cfg: LmConfig
    lm: object
    codec: FrameCodec
    tokenizer: object
    description: str
    is_demo: bool = False

    @property
    def n_user(self) -> int:
        return self.cfg.user_q


def _demo_session(args) -> Session:
    cfg = preset("random-tiny")
    seed = getattr(args, "seed", 0) or 0
    lm = random_lm(cfg, seed=seed % (2**31))
    n = max(cfg.user_q, cfg.dep_q, 1)
    mimi_cfg = str(resources.files("moshi_mlx") / "configs" / "mimi-tiny.json")
    mimi = random_mimi(seed=seed % (2**31), num_codebooks=n, config=mimi_cfg)
    return Session(cfg, lm, FrameCodec(mimi, n_encode=cfg.user_q), PlaceholderTokenizer(),
                   "random-tiny demo model (random weights: it produces NOISE)", is_demo=True)


def _local_model_folder(args) -> str | None:
    """The folder of a local `--moshi-weight` (file or folder): it stands in for the repo,
    so its config.json, Mimi and tokenizer are found there before anything is asked of the Hub."""
    w = args.moshi_weight
    if not w or args.hf_repo or not os.path.exists(w):
        return None
    return w if os.path.isdir(w) else (os.path.dirname(os.path.abspath(w)) or ".")


def _resolve_config(args, repo: str) -> LmConfig:
    if args.lm_config:
        return LmConfig.from_json(hf_get(args.lm_config, repo))
    if os.path.isdir(repo):
        if os.path.exists(os.path.join(repo, "config.json")):
            return LmConfig.from_json(os.path.join(repo, "config.json"))
        return preset(preset_for_repo(DEFAULT_REPOS[args.quantized][0])[0])
    cfg_file = hf_get_optional("config.json", repo)
    if cfg_file is not None:
        return LmConfig.from_json(cfg_file)
    known = preset_for_repo(repo)
    return preset(known[0] if known else "moshiko")


def _weights_path(args, cfg: LmConfig, repo: str, default_name: str):
    w = args.moshi_weight
    if w and os.path.isdir(w):
        names = [n for n in sorted(os.listdir(w)) if n.endswith(".safetensors") and not n.startswith("tokenizer")]
        if cfg.moshi_name in names:
            return os.path.join(w, cfg.moshi_name)
        if len(names) != 1:
            raise WeightsError(f"{w} should hold one .safetensors model file, found {names or 'none'}")
        return os.path.join(w, names[0])
    if w:
        return hf_get(w, repo)
    name = cfg.moshi_name if cfg.moshi_name and args.quantized is None else default_name
    return hf_get(name, repo)


def _tokenizer(args, cfg: LmConfig, repo: str):
    if args.tokenizer == "none":
        return PlaceholderTokenizer()
    return TextTokenizer(hf_get(args.tokenizer or cfg.tokenizer_name or DEFAULT_TOKENIZER, repo))


def _check_codec_fits(mimi, cfg: LmConfig, name: str) -> None:
    if int(mimi.cardinality) != cfg.card:
        raise WeightsError(f"{name} has {mimi.cardinality} entries per codebook but the LM expects card {cfg.card}: "
                           "this Mimi does not belong to this model")


def load_session(args) -> Session:
    """Resolve the model flags (see `add_model_args`) into a ready LM, codec and tokenizer."""
    if getattr(args, "model", None) == "random-tiny":
        return _demo_session(args)
    repo, default_name = DEFAULT_REPOS[args.quantized]
    repo = args.hf_repo or _local_model_folder(args) or repo
    cfg = _resolve_config(args, repo)
    weights = _weights_path(args, cfg, repo, default_name)
    lm = load_lm(weights, cfg, dtype=_dtype(args.dtype))
    auto = args.dtype == "auto"
    compute = prepare_lm(lm, activation="auto" if auto else "stored", upcast="auto" if auto else False)
    tokenizer = _tokenizer(args, cfg, repo)
    mimi_spec = args.mimi_weight or cfg.mimi_name or DEFAULT_MIMI
    backend = best_backend() if args.mimi_backend == "auto" else args.mimi_backend
    n_user, n_out = cfg.user_q, cfg.dep_q
    if mimi_spec == "random":  # the published architecture with seeded random weights: noise
        mimi = random_mimi(seed=args.seed % (2**31), num_codebooks=max(n_user, n_out, 1))
        _check_codec_fits(mimi, cfg, "the random Mimi")
        codec = FrameCodec(mimi, n_encode=n_user)
        return Session(cfg, lm, codec, tokenizer, f"LM {weights}, random Mimi (NOISE)")
    mimi_path = hf_get(mimi_spec, repo)
    if backend == "rustymimi":
        enc = load_mimi(mimi_path, num_codebooks=max(n_user, 1), backend="rustymimi")
        dec = load_mimi(mimi_path, num_codebooks=n_out, backend="rustymimi") if n_out else None
        codec = FrameCodec(enc, dec, n_encode=n_user)
    else:
        mimi = load_mimi(mimi_path, num_codebooks=max(n_user, n_out, 1))
        _check_codec_fits(mimi, cfg, str(mimi_path))
        codec = FrameCodec(mimi, n_encode=n_user)
    desc = (f"LM {weights.name if hasattr(weights, 'name') else weights} ({cfg.model_type or 'moshi'}, "
            f"{compute.describe()}), Mimi via {backend}")
    return Session(cfg, lm, codec, tokenizer, desc)


def make_gen(session: Session, args) -> LmGen:
    return LmGen(session.lm, temp=args.temp, temp_text=args.temp_text, top_k=args.top_k, top_k_text=args.top_k_text,
                 top_p=args.top_p, top_p_text=args.top_p_text, cfg_coef=args.cfg_coef, seed=args.seed)
