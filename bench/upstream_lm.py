"""One LM case of the suite run with upstream's `moshi_mlx` (0.3.0), in upstream's own
virtual environment: `UPSTREAM_PYTHON bench/upstream_lm.py FOLDER --variant recipe|fp32`.

Only upstream's public classes are used, the way its `local.py` uses them: build
`models.Lm` from the config dict, `set_dtype(bfloat16)`, `nn.quantize` the modules the file
stores quantized (bits and group size read from each module's tensor shapes, so mixed
files load too), `load_weights(strict=True)`, then `LmGen.step` with samplers matching
ours (audio temperature 0.8 / top-k 250, text 0.7 / top-k 25).

Variants:
- recipe: upstream as shipped: bf16 activations (for q8 / q4 this is MLX's slow
  mixed-dtype quantized path on a CPU);
- fp32: float32 activations. A float file is converted with `model.set_dtype(float32)`
  (fp32 weights, as `--dtype float32` does for ours); a quantized file keeps its weights as
  stored and only the embedding outputs are cast to float32 (a two-line patch here), after
  which every layer computes in float32.

Timing as in bench/lm_ours.py: each step is timed whole and split in two by evaluating the
text token before the depformer runs; a second short pass times each temporal layer.
Prints one line `RESULT {json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import weight_bytes  # noqa: E402
from proc_memory import peak_rss_mb, rss_mb  # noqa: E402,F401

from moshi_mlx import models, utils  # noqa: E402  (upstream's package: this runs in its venv)


def _quant_params(tensors_shapes: dict, path: str, in_dim: int):
    """{'bits', 'group_size'} of module `path` if the file stores it quantized, else None."""
    w, s = tensors_shapes.get(f"{path}.weight"), tensors_shapes.get(f"{path}.scales")
    if w is None or s is None:
        return None
    return {"bits": w[1] * 32 // in_dim, "group_size": in_dim // s[1]}


def _in_dim(m) -> int:
    if isinstance(m, nn.Embedding):
        return m.weight.shape[1]
    return m.weight.shape[1]


def build(folder: Path, variant: str):
    cfg_dict = json.loads((folder / "bench_config.json").read_text())
    weights = next(folder.glob("*.safetensors"))
    cfg = models.LmConfig.from_config_dict(cfg_dict)
    model = models.Lm(cfg)
    model.set_dtype(mx.bfloat16)
    tensors = mx.load(str(weights))
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    quantized = any(k.endswith(".scales") for k in shapes)
    if quantized:

        def predicate(path, m):
            if not hasattr(m, "to_quantized"):
                return False
            return _quant_params(shapes, path, _in_dim(m)) or False

        nn.quantize(model, class_predicate=predicate)
    model.load_weights(list(tensors.items()), strict=True)
    del tensors
    if variant == "fp32":
        if quantized:
            _cast_embeddings_to(mx.float32)
        else:
            model.set_dtype(mx.float32)
    mx.eval(model.parameters())
    return cfg, model, quantized


def _cast_embeddings_to(dtype):
    from moshi_mlx.models import lm as up_lm

    for cls in (nn.QuantizedEmbedding, up_lm.ScaledEmbedding):
        orig = cls.__call__

        def call(self, x, _orig=orig):
            return _orig(self, x).astype(dtype)

        cls.__call__ = call


def run(folder: str, variant: str, steps: int, warmup: int, layer_steps: int, seed: int) -> dict:
    t0 = time.perf_counter()
    cfg, model, quantized = build(Path(folder), variant)
    load_s = time.perf_counter() - t0
    rss_loaded = rss_mb()
    total_steps = warmup + steps + layer_steps + 8
    gen = models.LmGen(
        model=model,
        max_steps=total_steps,
        text_sampler=utils.Sampler(top_k=25, temp=0.7),
        audio_sampler=utils.Sampler(top_k=250, temp=0.8),
    )
    marks: dict[str, float] = {}
    orig_sample = model.depformer.sample

    def split_sample(main_out, sampler, text_token, cache, cfg_coef=1.0):
        mx.eval(main_out, text_token)
        marks["temporal_done"] = time.perf_counter()
        return orig_sample(main_out, sampler, text_token, cache, cfg_coef=cfg_coef)

    model.depformer.sample = split_sample
    mx.random.seed(seed)
    rng = np.random.default_rng(seed)
    user_q = cfg.other_codebooks
    user = rng.integers(0, cfg.audio_vocab_size - 1, (total_steps, user_q))
    step_ms, temporal_ms, dep_ms = [], [], []
    for i in range(warmup + steps + 1):
        t = time.perf_counter()
        text, _ = gen.step(mx.array(user[i][None], dtype=mx.int32))
        mx.eval(text, gen.gen_sequence)  # the step's text and audio tokens
        text.item()
        e = time.perf_counter()
        if i > warmup:
            step_ms.append((e - t) * 1e3)
            temporal_ms.append((marks["temporal_done"] - t) * 1e3)
            dep_ms.append((e - marks["temporal_done"]) * 1e3)

    layer_ms: list[float] = []
    for j in range(layer_steps + 1):
        xs = model.text_emb(mx.array([[int(rng.integers(0, 1000))]]))
        for k, emb in enumerate(model.audio_embs):
            xs = xs + emb(mx.array([[int(user[j][k % user_q])]]))
        mx.eval(xs)
        per = []
        for layer, c in zip(model.transformer.layers, model.transformer_cache):
            t = time.perf_counter()
            xs = layer(xs, cache=c)
            mx.eval(xs)
            per.append((time.perf_counter() - t) * 1e3)
        if j:
            layer_ms.extend(per)
    act = "float32" if variant == "fp32" else "bfloat16"
    return {
        "impl": "upstream",
        "variant": f"upstream moshi_mlx ({'its recipe: bf16' if variant == 'recipe' else 'fp32'} activations)",
        "upstream_variant": variant,
        "activation_dtype": act,
        "mlx": mx.__version__,
        "layers": cfg.transformer.num_layers,
        "steps": steps,
        "warmup": warmup,
        "step_ms_raw": step_ms,
        "temporal_ms_raw": temporal_ms,
        "depformer_ms_raw": dep_ms,
        "layer_ms_raw": layer_ms,
        "bytes": weight_bytes.step_bytes(model),
        "load_s": load_s,
        "rss_loaded_mb": rss_loaded,
        "rss_steps_mb": rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
        "mlx_peak_mb": (
            mx.get_peak_memory()
            if hasattr(mx, "get_peak_memory")
            else mx.metal.get_peak_memory()
            if hasattr(mx, "metal")
            else float("nan") * 2**20
        )
        / 2**20,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder")
    ap.add_argument("--variant", choices=("recipe", "fp32"), default="recipe")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--layer-steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    res = run(a.folder, a.variant, a.steps, a.warmup, a.layer_steps, a.seed)
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
