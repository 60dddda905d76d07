"""`load_tts_session`'s own arguments are checked before any work, in one line naming the
parameter (a script calls it; moshi-tts's `--n-q` is typed by its parser)."""

from __future__ import annotations

import numpy as np
import pytest

from moshi_mlx.errors import UsageError
from moshi_mlx.runtime.tts import load_tts_session


@pytest.mark.parametrize("n_q", ["x", "2", 2.5, True, [1]])
def test_a_non_integer_n_q_is_one_line_before_any_work(n_q, tmp_path):
    """It was Python's own error ('invalid literal for int() with base 10: 'x'', 'int() argument
    must be ... not 'list'') after the model loaded, and 2.5, "2" and True ran as 2, 2 and 1."""
    missing = tmp_path / "no such folder"
    for kw in (dict(model="tts-tiny"), dict(hf_repo=str(missing))):  # before the model folder is looked at
        with pytest.raises(UsageError) as e:
            load_tts_session(n_q=n_q, **kw)
        assert str(e.value) == f"n_q must be an integer, got {n_q!r}"


def test_an_integer_n_q_of_any_kind_is_taken():
    assert load_tts_session(model="tts-tiny", n_q=np.int64(2)).n_q == 2
    assert load_tts_session(model="tts-tiny").n_q == load_tts_session(model="tts-tiny", n_q=None).n_q


@pytest.mark.parametrize("backend", ["bogus", None, "MLX"])
def test_an_unknown_mimi_backend_is_refused_as_by_load(backend):
    """load_tts_session checks mimi_backend against the one list (constants.MIMI_BACKENDS) with
    load()'s function and words; it took any value and ran the demo model (a real one failed
    later, in the Mimi loader, after the download)."""
    import moshi_mlx

    want = f"mimi_backend must be one of auto, mlx, rustymimi, got {backend!r}"
    for call in (
        lambda: load_tts_session(model="tts-tiny", mimi_backend=backend),
        lambda: moshi_mlx.load("random-tiny", mimi_backend=backend),
    ):
        with pytest.raises(UsageError) as e:
            call()
        assert str(e.value) == want


def test_the_voice_repo_is_a_hub_repo_from_the_cache_or_a_local_copy(tmp_path, monkeypatch):
    """kyutai/tts-voices as users hold it: in the Hugging Face cache (offline), or a local copy
    (`hf download kyutai/tts-voices --local-dir DIR`, then --voice-repo DIR: relative, absolute
    or with ~). A copy that is not there was 'model folder /abs has no file
    'path/to/voices/expresso/...'' (an absolute path was read as the hf:// repo '/abs')."""
    import huggingface_hub.constants as c
    import mlx.core as mx

    from moshi_mlx.models.config import preset
    from moshi_mlx.runtime.tts import load_voice

    from ..weights.hf_cache import add_repo

    cfg = preset("tts-tiny")
    name = "expresso/ex03-ex01_happy_001_channel1_334s.wav"
    stored = f"{name}.{cfg.extra['model_id']['sig']}@{cfg.extra['model_id']['epoch']}.safetensors"
    voice = np.arange(32 * 5, dtype=np.float32).reshape(1, 32, 5)
    copy = tmp_path / "voices"
    (copy / "expresso").mkdir(parents=True)
    mx.save_safetensors(str(copy / stored), {"speaker_wavs": mx.array(voice)})
    add_repo(tmp_path / "hub", "kyutai/tts-voices", {stored: copy / stored})
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for repo in ("kyutai/tts-voices", "voices", str(copy), "~/voices"):
        assert np.array_equal(load_voice(name, cfg, repo), voice[0]), repo
    gone = tmp_path / "elsewhere" / "voices"
    with pytest.raises(UsageError, match=rf"^voice '{name}' not found \({gone}: no such model folder"):
        load_voice(name, cfg, str(gone))
