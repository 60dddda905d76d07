"""Do the compiled accelerator step and the eager step agree on this device?

    python -m bench.path_parity [--steps 60] [--out FILE]

The tests prove it on a CPU; this is the same check, as a script, for a device where
pytest may not be installed (the GPU kit's machine): random-tiny weights, greedy and
sampled generation, float32 and bf16, the eager GPU-format step against the compiled one
(same tokens expected), plus Mimi's compiled stream against its eager stream (same codes).
Prints one JSON line and exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def lm_tokens(compiled: bool, dtype: str, steps: int, greedy: bool) -> list:
    import mlx.core as mx

    from moshi_mlx import models
    from moshi_mlx.models.backend import prepare_lm

    lm = models.random_lm(models.lm_preset("random-tiny"), seed=7)
    if dtype == "bf16":
        lm.set_dtype(mx.bfloat16)
    fmt = prepare_lm(lm, profile="gpu", compile=compiled)
    kw = dict(temp=0.0, temp_text=0.0) if greedy else {}
    gen = models.LmGen(lm, seed=3, compute=fmt, **kw)
    rng = np.random.default_rng(1)
    return [gen.step(rng.integers(-1, lm.cfg.card, lm.cfg.user_q)) for _ in range(steps)]


def mimi_codes(compiled: bool, frames: int) -> tuple[np.ndarray, int]:
    from moshi_mlx.models.backend import prepare_mimi
    from moshi_mlx.weights.mimi_loader import load_mimi

    m = load_mimi("random", num_codebooks=8)  # seeded random weights of the published architecture
    prepare_mimi(m, profile="gpu", compile=compiled)
    pcm = (0.2 * np.random.default_rng(0).standard_normal((1, 1, frames * 1920))).astype(np.float32)
    out = [np.array(m.encode_step(pcm[..., i * 1920 : (i + 1) * 1920])) for i in range(frames)]
    calls = m._compiled["encoder"].compiled_calls if compiled else 0
    return np.concatenate(out, axis=-1), calls


def main(argv=None) -> int:
    import mlx.core as mx

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    res: dict = {"device": str(mx.default_device()), "mlx": mx.__version__, "lm": {}}
    ok = True
    for dtype in ("fp32", "bf16"):
        for greedy in (True, False):
            same = lm_tokens(False, dtype, a.steps, greedy) == lm_tokens(True, dtype, a.steps, greedy)
            res["lm"][f"{dtype} {'greedy' if greedy else 'sampled'}"] = same
            ok &= same
    eager, _ = mimi_codes(False, a.frames)
    comp, calls = mimi_codes(True, a.frames)
    res["mimi"] = {"same_codes": bool(np.array_equal(eager, comp)), "compiled_calls": calls}
    ok &= res["mimi"]["same_codes"] and calls > 0
    res["ok"] = bool(ok)
    line = json.dumps(res)
    print(line)
    if a.out:
        a.out.write_text(line + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
