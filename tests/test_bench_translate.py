"""bench/translate_bench.py runs as docs/translation.md says: its default audio is the package's
demo clip, and --tail-frames bounds the silence after the marker (the rule `Model.respond`
reads, runtime/translation.py). The 3B-shaped checkpoint is replaced by the demo
Hibiki-Zero's: the bench's own code path, in seconds."""

from __future__ import annotations

import bench.translate_bench as tb
from moshi_mlx.models.config import preset
from moshi_mlx.runtime import translation
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint


def test_translate_bench_runs_with_its_defaults_and_its_tail(tmp_path, monkeypatch):
    cfg = preset("random-tiny-hibiki-zero")
    write_random_checkpoint(cfg, tmp_path, seed=0)
    monkeypatch.setattr(tb, "prepare", lambda case, cache_dir: tmp_path)
    monkeypatch.setattr(tb, "shaped_config", lambda shape, layers: cfg)
    monkeypatch.setattr(translation, "TRANSLATION_TAIL_FRAMES", translation.TRANSLATION_TAIL_FRAMES)
    out = tb.main(["--seconds", "0.4", "--tail-frames", "3", "--fmt", "bf16"])
    # 5 source frames (0.4 s, the warm-up frame), the marker, 3 of tail, own_delay - 1: a few,
    # not the 250 of TRANSLATION_TAIL_S (random weights never write EOS)
    assert out["tail_frames"] == 3
    assert 5 <= out["frames_stepped"] <= 5 + 1 + 3 + cfg.own_delay, out
