"""Regenerate tests/fixtures/mimi/ from the PyTorch reference (and rustymimi).

Run with the oracle venv:  NO_TORCH_COMPILE=1 /work/ref/bin/python scripts/make_fixtures_mimi.py

For each config, random weights come from `moshi_mlx.weights.mimi_keys.
random_published_weights` (seeded numpy, identical on every platform) in the released
layout; Kyutai's PyTorch `MimiModel` (float32) encodes and decodes a deterministic clip in
batch and in streaming mode (one 80 ms frame per call).

- small configs: the weights file itself is committed (a few hundred KB), so tests also
  exercise loading a checkpoint from disk;
- the full published config: only the seed, the centroid scale and the expected outputs are
  committed; the test rebuilds the 96 M weights from the seed. rustymimi (which only knows
  the published config) encodes the same clip from the same weights for a second oracle.

The centroid scale is measured: the std of the quantizer's projected latent on the clip, so
that codes depend on the input at every RVQ level.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from _oracle import ROOT  # first: the oracle's environment

import numpy as np
import torch
from moshi.models import loaders
from safetensors.numpy import save_file

from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407
from moshi_mlx.weights.mimi_keys import random_published_weights

OUT = ROOT / "tests" / "fixtures" / "mimi"


def small_config(**over) -> MimiConfig:
    d = mimi_202407().to_dict()
    d["seanet"].update(n_filters=4, dimension=32)
    d["transformer"].update(
        d_model=32, num_heads=4, num_layers=2, dim_feedforward=64, input_dimension=32, output_dimensions=[32]
    )
    d["quantizer"].update(dimension=16, n_q=8, bins=64, input_dimension=32, output_dimension=32)
    for section, values in over.items():
        if isinstance(values, dict):
            d[section].update(values)
        else:
            d[section] = values
    return MimiConfig.from_dict(d)


CONFIGS = {
    # reduced widths, the published structure
    "small": dict(cfg=small_config(), seed=1, frames=6),
    # context 5 (< 12 encoder steps): checks the attention window in batch mode; two
    # residual layers (dilation 2), conv shortcuts, transformer in/out projections,
    # 2 semantic codebooks, 25 Hz codes (no down/upsampling)
    "variant": dict(
        cfg=small_config(
            frame_rate=25.0,
            seanet=dict(n_residual_layers=2, true_skip=False),
            transformer=dict(d_model=24, num_heads=3, context=5),
            quantizer=dict(n_q=6, n_q_semantic=2),
        ),
        seed=2,
        frames=12,
    ),
    "full": dict(cfg=mimi_202407(), seed=20240701, frames=4),
}


def clip(batch: int, frames: int, frame_size: int, seed: int) -> np.ndarray:
    """A deterministic speech-like test signal: two gliding harmonics + noise bursts."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames * frame_size) / 24000.0
    out = []
    for b in range(batch):
        f0 = 120 + 60 * b + 40 * np.sin(2 * np.pi * 1.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / 24000.0
        x = 0.3 * np.sin(phase) + 0.15 * np.sin(3 * phase + b)
        x += 0.05 * rng.standard_normal(t.shape) * (np.sin(2 * np.pi * 4 * t) > 0)
        out.append(x)
    return np.stack(out)[:, None, :].astype(np.float32)


def torch_mimi(cfg: MimiConfig, weights: dict[str, np.ndarray]):
    model = loaders.get_mimi(None, mimi_config=cfg.to_dict(), device="cpu", num_codebooks=cfg.quantizer.n_q)
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    model.load_state_dict(state, strict=True)  # legacy attention names are remapped by moshi
    return model.float().eval()


@torch.no_grad()
def latent_std(model, pcm: np.ndarray) -> float:
    emb = model._encode_to_unquantized_latent(torch.from_numpy(pcm))
    q = model.quantizer
    projected = torch.cat([q.rvq_first.input_proj(emb), q.rvq_rest.input_proj(emb)], dim=1)
    return float(projected.std())


@torch.no_grad()
def run_reference(model, pcm: np.ndarray, frame_size: int) -> dict[str, np.ndarray]:
    x = torch.from_numpy(pcm)
    B, _, T = pcm.shape
    codes = model.encode(x)
    with model.streaming(B):
        codes_stream = torch.cat([model.encode(x[..., i : i + frame_size]) for i in range(0, T, frame_size)], dim=2)
    audio = model.decode(codes)
    with model.streaming(B):
        audio_stream = torch.cat([model.decode(codes[..., i : i + 1]) for i in range(codes.shape[-1])], dim=2)
    return {
        "codes": codes.numpy().astype(np.int32),
        "codes_stream": codes_stream.numpy().astype(np.int32),
        "audio": audio.numpy(),
        "audio_stream": audio_stream.numpy(),
    }


def rustymimi_codes(weights: dict[str, np.ndarray], pcm: np.ndarray, frame_size: int, n: int) -> dict:
    import rustymimi

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mimi.safetensors"
        save_file(weights, str(path))
        tok = rustymimi.Tokenizer(str(path), num_codebooks=n)
        batch = np.asarray(tok.encode(pcm)).astype(np.int32)
        tok.reset()
        stream = np.concatenate(
            [
                np.asarray(tok.encode_step(np.ascontiguousarray(pcm[..., i : i + frame_size])))
                for i in range(0, pcm.shape[-1], frame_size)
            ],
            axis=-1,
        ).astype(np.int32)
    return {"rustymimi_codes": batch, "rustymimi_codes_stream": stream}


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean()) if a.shape == b.shape else float("nan")


def main() -> None:
    torch.manual_seed(0)
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {}
    for name, spec in CONFIGS.items():
        cfg, seed, frames = spec["cfg"], spec["seed"], spec["frames"]
        pcm = clip(2, frames, cfg.frame_size, seed)
        probe = torch_mimi(cfg, random_published_weights(cfg, seed=seed, codebook_scale=1.0))
        scale = round(latent_std(probe, pcm), 4)
        weights = random_published_weights(cfg, seed=seed, codebook_scale=scale)
        model = torch_mimi(cfg, weights)
        ref = run_reference(model, pcm, cfg.frame_size)
        assert (ref["codes"] == ref["codes_stream"]).all(), f"{name}: torch batch != streaming codes"
        info = {
            "config": cfg.to_dict(),
            "seed": seed,
            "codebook_scale": scale,
            "frames": frames,
            "torch_stream_vs_batch_audio_maxabs": float(np.abs(ref["audio"] - ref["audio_stream"]).max()),
            "distinct_codes_per_level": [int(len(np.unique(ref["codes"][:, k]))) for k in range(ref["codes"].shape[1])],
        }
        if name == "full":
            n = 8
            ref.update(rustymimi_codes(weights, pcm, cfg.frame_size, n))
            info["rustymimi_num_codebooks"] = n
            info["rustymimi_vs_torch_agreement"] = agreement(ref["rustymimi_codes"], ref["codes"][:, :n])
            info["rustymimi_stream_vs_torch_agreement"] = agreement(ref["rustymimi_codes_stream"], ref["codes"][:, :n])
        else:
            save_file(
                weights, str(OUT / f"{name}.safetensors"), metadata={"seed": str(seed), "codebook_scale": str(scale)}
            )
        np.savez_compressed(OUT / f"{name}_expected.npz", pcm=pcm, **ref)
        meta[name] = info
        print(name, json.dumps({k: v for k, v in info.items() if k != "config"}))
    (OUT / "fixtures.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
