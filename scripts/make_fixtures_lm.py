"""Regenerate tests/fixtures/lm/*.npz from Kyutai's PyTorch `moshi` package (the oracle).

Run with the oracle venv:  NO_TORCH_COMPILE=1 /work/ref/bin/python scripts/make_fixtures_lm.py [case ...]

Each case builds the reference `LMModel` in float32 with seeded numpy random weights in the
released PyTorch layout (`moshi_mlx.weights.random_state`, so the test rebuilds the very same
weights without torch), then records
- the teacher-forced `LMModel.forward` on random codes (text and audio logits, masks),
- greedy `LMGen` generation: the text token, the text logits (after CFG) and the audio tokens
  sampled at every step, fed `[x, u0, u1, ...]` (the mapping to our `LmGen.step(u_t)` is in
  moshi_mlx/models/generate.py).
Only strided slices of the logits are stored (plus each step's top-8), to keep files small.
"""

from __future__ import annotations

import json
import sys
import time

from _oracle import ROOT, reference_lm, save_case  # first: the oracle's environment

import numpy as np
import torch
from moshi.conditioners import ConditionAttributes
from moshi.models import LMGen

from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights.lm_keys import pytorch_layout
from moshi_mlx.weights.random_state import random_state

OUT = ROOT / "tests" / "fixtures" / "lm"
TEXT_STRIDE = 16
AUDIO_STRIDE = 4

_NARROW_7B = {
    "dim": 128,
    "text_card": 32000,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 64,
    "depformer_dim_feedforward": 264,
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_causal": True,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}
_REAL_7B = dict(
    _NARROW_7B,
    dim=4096,
    num_heads=32,
    num_layers=1,
    depformer_dim=1024,
    depformer_dim_feedforward=4224,
    depformer_num_heads=16,
    depformer_num_layers=1,
)
_NARROW_2B = dict(
    _NARROW_7B,
    text_card=48000,
    n_q=32,
    dep_q=16,
    max_period=100000,
    depformer_context=16,
    delays=[0] + ([0] + [2] * 15) * 2,
    depformer_weights_per_step_schedule=list(range(8)) + [8] * 8,
    conditioners={
        "description": {
            "type": "lut",
            "lut": {
                "n_bins": 31,
                "dim": 16,
                "tokenizer": "noop",
                "possible_values": ["very_bad", "bad", "neutral", "good", "very_good"],
            },
        }
    },
    fuser={"sum": ["description"]},
    model_type="hibiki",
)
_VARIANTS = {
    "dim": 96,
    "text_card": 500,
    "text_card_out": 480,
    "existing_text_padding_id": 3,
    "n_q": 5,
    "dep_q": 3,
    "card": 100,
    "num_heads": 6,
    "num_layers": 2,
    "hidden_scale": 3,
    "kv_repeat": 2,
    "causal": True,
    "layer_scale": 0.3,
    "context": 50,
    "max_period": 5000,
    "gating": "none",
    "norm": "layer_norm",
    "positional_embedding": "rope_concat",
    "depformer_dim": 48,
    "depformer_dim_feedforward": [96, 120],
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_layer_scale": None,
    "depformer_multi_linear": False,
    "depformer_weights_per_step": True,
    "depformer_weights_per_step_schedule": [0, 1, 1],
    "depformer_low_rank_embeddings": 16,
    "depformer_gating": "gelu",
    "depformer_pos_emb": "sin",
    "depformer_max_period": 100,
    "delays": [0, 1, 0, 2, 0, 1],
    "demux_second_stream": True,
    "extra_heads_num_heads": 2,
    "extra_heads_dim": 4,
}

# Hibiki-Zero (kyutai/hibiki-zero-3b-pytorch-bf16; moshi_mlx/configs/hibiki-zero-3b.json has the
# sources): every structural feature at narrow widths — GQA (kv_repeat 2), rope_concat,
# hidden_scale 6 with the depformer's feed-forward null (= 6 x depformer_dim), the 9-set
# per-step schedule, a LayerNorm per depformer step (depformer_norms.{i}), 32 streams of which
# 16 generated, delays 0/2, no conditioners. text_card narrowed from 48000 to keep the file small.
_NARROW_ZERO = {
    "dim": 128,
    "text_card": 4000,
    "existing_text_padding_id": 3,
    "n_q": 32,
    "dep_q": 16,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 6,
    "kv_repeat": 2,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 20000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope_concat",
    "depformer_dim": 64,
    "depformer_dim_feedforward": None,
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_kv_repeat": 1,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 16,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8,
    "depformer_norm": "layer_norm",
    "delays": [0] + ([0] + [2] * 15) * 2,
    "conditioners": {},
    "model_type": "hibiki",
}
# The Hibiki-Zero case's source: SPEECH frames of random codes, then the end-of-input marker
# (one frame of `card` on every source codebook, at ceil(duration x 12.5) as hibiki_zero's
# add_input_eos puts it), then SILENCE frames of one constant frame (encoded silence)
ZERO_SPEECH, ZERO_SILENCE = 180, 40
# ... and its weights get an EOS tied to the marker: text_linear row 2 (EOS) = unit vector v, and
# row `card` of the source embeddings += EOS_GAIN x v, of the model's own -= EOS_GAIN x v. `card`
# is also the initial token, which every stream reads at the first positions: there the two
# cancel (16 source and 16 own streams, same delays); only the marker leaves 16 x EOS_GAIN x v,
# so greedy decoding samples EOS once the model has read it (random weights never would). The
# patched rows are stored in the fixture.
EOS_TOKEN, EOS_GAIN = 2, 40.0

# name -> (config, weight seed, greedy steps, cfg_coef, batch-forward frames)
CASES = {
    "moshi7b_narrow": (_NARROW_7B, 1, 200, 1.0, 12),
    "moshi7b_real_width": (_REAL_7B, 2, 6, 1.0, 4),
    "hibiki2b_narrow": (_NARROW_2B, 3, 200, 3.0, 12),
    "tiny_context": (dict(_NARROW_7B, context=8), 4, 100, 1.0, 20),
    "variants": (_VARIANTS, 5, 60, 1.0, 10),
    "hibiki_zero_narrow": (_NARROW_ZERO, 6, ZERO_SPEECH + 1 + ZERO_SILENCE, 1.0, 12),
}


def conditions(lm, values: list[str]):
    if lm.condition_provider is None or not lm.condition_provider.conditioners:
        return None
    return lm.condition_provider.prepare_and_provide(
        [ConditionAttributes(text={"description": v}, tensor={}) for v in values]
    )


def random_codes(cfg: LmConfig, rng, T: int) -> np.ndarray:
    codes = np.empty((1, cfg.num_streams, T), dtype=np.int64)
    codes[0, 0] = rng.integers(0, cfg.text_out_card, T)
    if cfg.demux_second_stream:  # some text tokens carry a second stream
        second = rng.integers(-1, 4, T)
        codes[0, 0] = codes[0, 0] + (second + 1) * (cfg.text_card + 1)
    codes[0, 1:] = rng.integers(0, cfg.card, (cfg.n_q, T))
    codes[0, 1 + cfg.dep_q + 1, T // 2] = -1  # a zero token in the user stream
    return codes


def run_case(name: str) -> None:
    cfg_dict, seed, steps, cfg_coef, T = CASES[name]
    cfg = LmConfig.from_dict(cfg_dict)
    layout = pytorch_layout(cfg)
    t0 = time.time()
    state = random_state(cfg, seed)
    assert set(layout) == set(state)
    patch = eos_patch(cfg, seed) if name == "hibiki_zero_narrow" else {}
    for (key, row), val in patch.items():
        state[key][row] = val
    lm = reference_lm(cfg_dict, state)
    user = translation_source(cfg, seed) if patch else None
    out, texts = record(lm, cfg, cfg_dict, seed, steps, cfg_coef, T, user)
    if patch:
        out["patch_key"] = np.array([k for k, _ in patch])
        out["patch_row"] = np.array([r for _, r in patch])
        out["patch_value"] = np.stack(list(patch.values()))
        out.update(translate_file(lm, cfg, user))
        info = (
            f"EOS at {texts.index(EOS_TOKEN) if EOS_TOKEN in texts else None}, translated frames {out['ref_eos_idx']}"
        )
    else:
        info = f"text[:10]={texts[:10]}"
    save_case(OUT, name, out, t0, info)


def eos_patch(cfg: LmConfig, seed: int) -> dict[tuple[str, int], np.ndarray]:
    """(tensor, row) -> new row: see EOS_GAIN."""
    rng = np.random.default_rng(2000 + seed)
    v = rng.standard_normal(cfg.dim).astype(np.float32)
    v /= np.linalg.norm(v)
    state = random_state(cfg, seed)
    patch = {("text_linear.weight", EOS_TOKEN): v}
    for k in range(cfg.n_q):
        sign = 1.0 if k >= cfg.dep_q else -1.0
        patch[(f"emb.{k}.weight", cfg.card)] = state[f"emb.{k}.weight"][cfg.card] + np.float32(sign * EOS_GAIN) * v
    return patch


def translation_source(cfg: LmConfig, seed: int) -> np.ndarray:
    """Source frames [ZERO_SPEECH + 1 + ZERO_SILENCE, user_q]: speech, marker, silence."""
    rng = np.random.default_rng(3000 + seed)
    speech = rng.integers(0, cfg.card, (ZERO_SPEECH, cfg.user_q))
    silence = np.repeat(rng.integers(0, cfg.card, (1, cfg.user_q)), ZERO_SILENCE, axis=0)
    marker = np.full((1, cfg.user_q), cfg.card)
    return np.concatenate([speech, marker, silence]).astype(np.int64)


def translate_file(lm, cfg: LmConfig, user: np.ndarray) -> dict[str, np.ndarray]:
    """hibiki_zero.run generate's loop on `user` (after the end of the source, the codes of
    silence): `max_delay` warm-up frames of silence, then every frame, each returned frame kept;
    then decode_outputs' cut: at the first text EOS (else after the last non-padding token),
    text tokens > PAD kept. Returns the frames, the cut and the kept tokens."""
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0, cfg_coef=1.0)
    silence = user[-1]
    frames = [silence] * gen.max_delay + list(user)
    got = []
    with gen.streaming(1), torch.no_grad():
        for i, f in enumerate(frames):
            tokens = gen.step(torch.from_numpy(np.asarray(f))[None, :, None])
            assert (tokens is None) == (i < gen.max_delay)
            if tokens is not None:
                got.append(tokens[0, :, 0].numpy().copy())
    got = np.stack(got)
    text = got[:, 0].tolist()
    pad = cfg.existing_text_padding_id
    if EOS_TOKEN in text:
        eos = text.index(EOS_TOKEN)
    else:
        eos = len(text) - 1
        while eos > 0 and text[eos] == pad:
            eos -= 1
    return {
        "ref_out_tokens": got,
        "ref_eos_idx": np.array(eos),
        "ref_kept_text": np.array([t for t in text[:eos] if t > pad], dtype=np.int64),
    }


def record(
    lm, cfg: LmConfig, cfg_dict: dict, seed: int, steps: int, cfg_coef: float, T: int, user: np.ndarray | None = None
):
    """(the fixture arrays, the generated text tokens) of reference model `lm`: the
    teacher-forced forward on random codes and `steps` greedy LMGen steps fed `user`
    (default: random codes)."""
    rng = np.random.default_rng(1000 + seed)
    out: dict[str, np.ndarray] = {
        "config": np.array(json.dumps(cfg_dict)),
        "seed": np.array(seed),
        "cfg_coef": np.array(cfg_coef),
    }

    # teacher-forced forward (training convention)
    codes = random_codes(cfg, rng, T)
    with torch.no_grad():
        res = lm(torch.from_numpy(codes), conditions(lm, ["very_good"]))
    out["codes"] = codes
    out["text_logits"] = res.text_logits[0, 0, :, ::TEXT_STRIDE].float().numpy()
    out["text_mask"] = res.text_mask[0, 0].numpy()
    out["audio_logits"] = res.logits[0, :, :, ::AUDIO_STRIDE].float().numpy()
    out["audio_mask"] = res.mask[0].numpy()

    # greedy streaming generation, torch fed [x, u0, u1, ...]
    if user is None:
        user = rng.integers(0, cfg.card, (steps, cfg.user_q)).astype(np.int64)
    texts, audios, logits, tops = [], [], [], []
    gen = LMGen(
        lm,
        use_sampling=False,
        temp=0.0,
        temp_text=0.0,
        cfg_coef=cfg_coef,
        condition_tensors=conditions(lm, ["very_good", "very_bad"] if cfg_coef != 1 else ["very_good"]),
        on_text_hook=lambda t: texts.append(int(t[0])),
        on_audio_hook=lambda a: audios.append(a[0].numpy().copy()),
        on_text_logits_hook=lambda lg: logits.append(lg[0, 0, 0].float().numpy().copy()),
    )
    frames = np.concatenate([np.full((1, cfg.user_q), 7), user], axis=0)
    with gen.streaming(1), torch.no_grad():
        for s in range(steps + 1):
            gen.step(torch.from_numpy(frames[s])[None, :, None])
    for lg in logits:
        tops.append(np.argsort(-lg)[:8])
    out["user"] = user
    out["gen_text"] = np.array(texts)
    out["gen_audio"] = np.stack(audios) if audios else np.zeros((steps + 1, 0), dtype=np.int64)
    checked = np.unique(np.linspace(0, steps, min(steps + 1, 8)).astype(np.int64))
    out["gen_logit_steps"] = checked
    out["gen_text_logits"] = np.stack([logits[s][::TEXT_STRIDE] for s in checked])
    out["gen_text_top"] = np.stack(tops)
    out["gen_text_top_logits"] = np.stack([lg[t] for lg, t in zip(logits, tops)])
    return out, texts


if __name__ == "__main__":
    for case in sys.argv[1:] or list(CASES):
        run_case(case)
