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
