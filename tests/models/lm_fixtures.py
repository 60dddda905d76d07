"""Shared helpers for the LM parity tests: rebuild a fixture's model without torch."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np

from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights.lm_loader import load_lm_state
from moshi_mlx.weights.random_state import random_state

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "lm"
TEXT_STRIDE = 16
AUDIO_STRIDE = 4


def fixture_config(name: str) -> dict:
    """The config dict (published JSON layout) a fixture was generated with."""
    return json.loads(str(np.load(FIXTURES / f"{name}.npz")["config"]))


def load_case(name: str):
    data = dict(np.load(FIXTURES / f"{name}.npz"))
    cfg = LmConfig.from_dict(json.loads(str(data["config"])))
    state = random_state(cfg, int(data["seed"]))
    # rows the fixture script changed (the Hibiki-Zero case's EOS tied to the end-of-input marker)
    for key, row, value in zip(data.get("patch_key", []), data.get("patch_row", []), data.get("patch_value", [])):
        state[str(key)][int(row)] = value
    lm = load_lm_state(state, cfg, dtype=mx.float32, consume=True)
    return cfg, lm, data


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(ours - ref)) / np.max(np.abs(ref)))
