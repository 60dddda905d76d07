"""Regenerate tests/fixtures/lm/int8_layout.json: the key layout of a PyTorch int8 checkpoint
(`quantize: true`, written by kyutai-labs/moshi `scripts/export_quantized.py`), read from
Kyutai's PyTorch `moshi` 0.2.13 itself.

Run with the oracle venv:  NO_TORCH_COMPILE=1 /work/ref/bin/python scripts/make_fixtures_int8.py

export_quantized.py builds the model with `CheckpointInfo.get_moshi()` (bfloat16), runs
`utils.quantize.replace_linear_with_qlinear(model)` and saves `model.state_dict()`: every
`nn.Linear` M becomes `M.weight` (int8, bitsandbytes `int8_vectorwise_quant` rows) plus
`M.weight_scb` (float32 row absmax), in-memory names (`self_attn.in_projs.N`), everything else
as the bfloat16 model holds it (the condition provider float32). QLinear needs bitsandbytes
(CUDA), so the layout is derived here from the same rule on the plain model: its Linear
modules, names and shapes. The test fills the layout with random values.
"""

from __future__ import annotations

import copy
import json

from _oracle import ROOT  # first: the oracle's environment

import torch
from make_fixtures_lm import _NARROW_2B, _VARIANTS
from moshi.models import loaders
from torch import nn

OUT = ROOT / "tests" / "fixtures" / "lm" / "int8_layout.json"
CASES = {"hibiki2b_narrow": _NARROW_2B, "variants": _VARIANTS}
_DT = {torch.bfloat16: "BF16", torch.float32: "F32"}


def layout(cfg_dict: dict) -> dict[str, list]:
    from _oracle import _META

    kwargs = {k: v for k, v in copy.deepcopy(cfg_dict).items() if k not in _META}  # moshi edits it
    lm = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="cpu", dtype=torch.bfloat16)
    linears = {name for name, m in lm.named_modules() if isinstance(m, nn.Linear)}
    out = {}
    for k, v in lm.state_dict().items():
        mod = k.rsplit(".", 1)[0]
        if mod in linears and k.endswith(".weight"):
            out[k] = ["I8", list(v.shape)]
            out[k + "_scb"] = ["F32", [v.shape[0]]]
        else:
            out[k] = [_DT[v.dtype], list(v.shape)]
    return out


if __name__ == "__main__":
    data = {name: {"config": cfg, "layout": layout(cfg)} for name, cfg in CASES.items()}
    OUT.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    for name, d in data.items():
        n = sum(v[0] == "I8" for v in d["layout"].values())
        print(f"{name}: {len(d['layout'])} tensors, {n} int8 Linear weights")
