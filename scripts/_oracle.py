"""What the fixture scripts that run Kyutai's PyTorch `moshi` 0.2.13 (the oracle) share:
its environment (no torch.compile, this checkout importable), the reference `LMModel` built
from a config dict and our seeded numpy weights, and how a case's arrays are saved.

The make_fixtures scripts that run the oracle import it first, before torch and moshi_mlx.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_TORCH_COMPILE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from moshi.models import loaders  # noqa: E402

# keys of a published config.json that are not `LMModel` arguments
_META = (
    "_source",
    "_added",
    "moshi_name",
    "mimi_name",
    "tokenizer_name",
    "model_type",
    "lm_gen_config",
    "stt_config",
    "tts_config",
    "model_id",
)


def reference_lm(cfg_dict: dict, state: dict[str, np.ndarray]):
    """The reference `LMModel` in float32, eval mode, with `state` (released layout) loaded strictly."""
    kwargs = {k: v for k, v in copy.deepcopy(cfg_dict).items() if k not in _META}
    lm = loaders.get_moshi_lm(None, lm_kwargs=kwargs, device="cpu", dtype=torch.float32)
    tensors = {k: torch.from_numpy(v) for k, v in state.items()}
    # LMModel always has depformer_in, even with no depformer (dep_q 0): unused, any value
    for k, v in lm.state_dict().items():
        if k not in tensors and k.startswith("depformer_in."):
            tensors[k] = torch.zeros_like(v)
    missing, unexpected = lm.load_state_dict(tensors, strict=True)
    assert not missing and not unexpected
    if cfg_dict.get("model_type") == "hibiki":  # as CheckpointInfo.get_moshi does
        lm.text_emb.weight.data[2] = lm.text_emb.weight.data[3]
    lm.eval()
    return lm


def save_case(out_dir: Path, name: str, arrays: dict[str, np.ndarray], t0: float, info: str) -> None:
    """Write `<out_dir>/<name>.npz` and print one line: the time since `t0`, the size, `info`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    print(f"{name}: {time.time() - t0:.1f}s, {path.stat().st_size / 1e3:.0f} kB, {info}")
