"""Regenerate tests/fixtures/lm/lora_*.npz: LoRA fine-tunes fused by Kyutai's PyTorch `moshi`.

Run with the oracle venv:  NO_TORCH_COMPILE=1 /work/ref/bin/python scripts/make_fixtures_lora.py [case ...]

Each case writes a base checkpoint (seeded `random_state`, released PyTorch layout) and an
adapters file in the layout moshi-finetune saves (every `nn.Linear` of the reference model
after `replace_all_linear_with_lora`, names and shapes read from moshi itself; values from
`random_lora`, so the test rebuilds both without torch), loads them the way moshi does
(`loaders.get_moshi_lm(base, lora_weights=..., fuse_lora=True)`, float32) and records what
scripts/make_fixtures_lm.py records, plus
- `lora_layout`: the adapters' names and shapes (the test draws the same values),
- the text logits of the same model unfused (`fuse_lora=False`, moshi's default in
  `CheckpointInfo.get_moshi`), to measure how far the two modes are apart,
- a few weights fused in bfloat16 by moshi (as uint16 bits), to check the rounding.
The `variants` case stores the attention adapters stacked (`self_attn.in_proj.lora_A.weight`,
which moshi's load hook splits per step) and a fully trained `text_emb.weight` (ft_embed).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

from _oracle import ROOT, save_case  # first: the oracle's environment

import numpy as np
import torch
from make_fixtures_lm import _NARROW_7B, _VARIANTS, conditions, random_codes, record  # noqa: F401
from moshi.models import loaders
from safetensors.numpy import save_file

from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights.random_state import random_lora, random_state

OUT = ROOT / "tests" / "fixtures" / "lm"
# name -> (config, rank, scaling, weight seed, greedy steps, batch frames, stacked attention adapters, ft_embed)
CASES = {
    "lora_moshi7b_narrow": (_NARROW_7B, 8, 2.0, 11, 60, 12, False, False),
    "lora_variants": (_VARIANTS, 4, 0.75, 12, 60, 10, True, True),
}
# fused weights compared bit for bit in bfloat16 (in-memory names of the reference model)
# (those the case's model has, up to 64k values each)
BF16_KEYS = (
    "transformer.layers.0.self_attn.in_projs.0.weight",
    "transformer.layers.1.gating.linear_in.weight",
    "transformer.layers.1.linear1.weight",
    "depformer.layers.0.self_attn.in_projs.1.weight",
    "depformer.layers.1.gating.1.linear_out.weight",
    "linears.0.weight",
    "depformer_emb.0.low_rank.weight",
)
_STEP = re.compile(r"^(.+\.self_attn)\.(in|out)_projs\.(\d+)\.(lora_[AB])\.weight$")


def lm_kwargs(cfg_dict: dict) -> dict:
    from _oracle import _META

    return {k: v for k, v in cfg_dict.items() if k not in _META}


def lora_layout(cfg_dict: dict, stacked: bool, ft_embed: bool) -> dict[str, list[int]]:
    """The adapters' names and shapes, as moshi's LoRA model has them."""
    lm = loaders.get_moshi_lm(None, lm_kwargs=lm_kwargs(cfg_dict), device="meta", dtype=torch.float32)
    shapes = {k: list(v.shape) for k, v in lm.state_dict().items() if ".lora_A." in k or ".lora_B." in k}
    assert shapes, "moshi made no LoRA layers"
    if stacked:  # in_projs.{i}.lora_X -> in_proj.lora_X, the per-step blocks stacked along dim 0
        out: dict[str, list[int]] = {}
        for k, shape in shapes.items():
            m = _STEP.match(k)
            if m is None:
                out[k] = shape
                continue
            name = f"{m[1]}.{m[2]}_proj.{m[4]}.weight"
            if name in out:
                out[name][0] += shape[0]
            else:
                out[name] = list(shape)
        shapes = out
    if ft_embed:
        shapes["text_emb.weight"] = list(lm.state_dict()["text_emb.weight"].shape)
    return shapes


def run_case(name: str) -> None:
    base_dict, rank, scaling, seed, steps, T, stacked, ft_embed = CASES[name]
    cfg_dict = dict(base_dict, lora=True, lora_rank=rank, lora_scaling=scaling)
    cfg = LmConfig.from_dict(cfg_dict)
    t0 = time.time()
    layout = lora_layout(cfg_dict, stacked, ft_embed)
    state = random_state(cfg, seed)
    adapters = random_lora(layout, seed + 100)
    with tempfile.TemporaryDirectory() as tmp:
        base_file, lora_file = Path(tmp) / "model.safetensors", Path(tmp) / "lora.safetensors"
        save_file(state, str(base_file))
        save_file(adapters, str(lora_file))

        def load(dtype, fuse: bool):
            return loaders.get_moshi_lm(
                base_file,
                lm_kwargs=lm_kwargs(cfg_dict),
                device="cpu",
                dtype=dtype,
                lora_weights=lora_file,
                fuse_lora=fuse,
            ).eval()

        lm = load(torch.float32, True)
        assert not any("lora" in k for k in lm.state_dict()), "not fused"
        out, texts = record(lm, cfg, cfg_dict, seed, steps, 1.0, T)
        unfused = load(torch.float32, False)
        assert any("lora" in k for k in unfused.state_dict())
        with torch.no_grad():
            res = unfused(torch.from_numpy(out["codes"]), conditions(unfused, ["very_good"]))
        out["unfused_text_logits"] = res.text_logits[0, 0, :, ::16].float().numpy()
        fused16 = load(torch.bfloat16, True).state_dict()
        for k in BF16_KEYS:
            if k not in fused16 or fused16[k].numel() > 65536:
                continue
            out[f"bf16__{k}"] = fused16[k].view(torch.int16).numpy().view(np.uint16)
    out["config"] = np.array(json.dumps(cfg_dict))
    out["lora_layout"] = np.array(json.dumps(layout))
    out["lora_seed"] = np.array(seed + 100)
    mask = out["text_mask"]
    gap = float(np.abs(out["unfused_text_logits"][mask] - out["text_logits"][mask]).max())
    save_case(
        OUT,
        name,
        out,
        t0,
        f"{len(layout)} adapter tensors, text[:10]={texts[:10]}, fused vs unfused text logits max |diff| {gap:.2e}",
    )


if __name__ == "__main__":
    for case in sys.argv[1:] or list(CASES):
        run_case(case)
