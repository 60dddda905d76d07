"""Checkpoints and configs as users hold them after saving, editing or copying them
(loading QA): a config.json saved with a byte-order mark, wrapper prefixes from PyTorch
DDP / torch.compile, repo ids in other capitals, Hub sources given to convert, PersonaPlex's
voices in the cache. Weights are random, in the published key layouts."""

from __future__ import annotations

import json


from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint
from moshi_mlx.weights.resolve import resolve_mimi, resolve_model

BOM = "\ufeff"


def _with_bom(path):
    path.write_text(BOM + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_config_json_with_a_byte_order_mark_is_read(tmp_path):
    """Notepad saves UTF-8 with a BOM; every config.json a user gives was 'is not valid
    JSON: Unexpected UTF-8 BOM' (LM config, a folder's config.json, the Mimi config and the
    repo config.json naming the Mimi)."""
    src = tmp_path / "model"
    write_random_checkpoint(preset("random-tiny"), src, seed=0)
    cfg_path = src / "config.json"
    _with_bom(cfg_path)
    assert LmConfig.from_json(cfg_path).dim == preset("random-tiny").dim
    got = resolve_model(src)
    assert got.how == str(cfg_path) and got.cfg.dim == preset("random-tiny").dim
    mimi_cfg = tmp_path / "mimi.json"
    mimi_cfg.write_text(BOM + json.dumps(mimi_202407().to_dict()), encoding="utf-8")
    assert MimiConfig.from_json(mimi_cfg) == mimi_202407()
    d = json.loads(cfg_path.read_text(encoding="utf-8-sig"))
    d.update(mimi_name="my-mimi.safetensors", mimi_config_name="mimi.json")
    cfg_path.write_text(BOM + json.dumps(d), encoding="utf-8")
    (src / "my-mimi.safetensors").write_bytes(b"x")
    (src / "mimi.json").write_bytes(mimi_cfg.read_bytes())
    path, named = resolve_mimi(repo=str(src))
    assert path == src / "my-mimi.safetensors" and named == mimi_202407()
