"""A simulated microphone's file (`--simulate`) ends as `Model.respond` ends a file, by the one
rule `translation.input_end`: the end-of-input marker for a translation model, silence until its
EOS answers it (at most the rule's frames), then own_delay - 1 frames, and the session stops once
that answer has been played. It used to stop as the file ended, the answer still on its way."""

import numpy as np

import moshi_mlx
from moshi_mlx.constants import FRAME_SIZE
from moshi_mlx.runtime import translation
from moshi_mlx.runtime.live import LiveOptions, run_session
from moshi_mlx.runtime.translation import SilencePolicy, input_end

from .test_translation import _eos_tied


def _session(model, seconds: float, **opts):
    x = (np.random.default_rng(0).standard_normal(int(seconds * 24000)) * 0.1).astype(np.float32)
    gen = model.generator(temp=0.0, temp_text=0.0)
    res = run_session(model, gen, LiveOptions(max_lag_ms=None, **opts), source=x, out=_Null(), log=_Null())
    assert res.code == 0 and res.pipe.error is None
    return res.pipe, -(-len(x) // FRAME_SIZE)


class _Null:
    def write(self, s):
        pass

    def flush(self):
        pass


def test_the_rule_is_the_files():
    moshi, hibiki = moshi_mlx.load("random-tiny"), moshi_mlx.load("random-tiny-hibiki-zero")
    assert input_end(moshi) == translation.InputEnd(False, 0, moshi.cfg.own_delay - 1)
    assert input_end(hibiki) == translation.InputEnd(True, translation.TRANSLATION_TAIL_FRAMES, 1)
    assert input_end(moshi_mlx.load("random-tiny-stt")).tail == 0  # no audio out


def test_moshi_plays_its_answer_to_the_last_frame():
    pipe, n = _session(moshi_mlx.load("random-tiny"), 1.0)
    assert pipe.stats.frames_played >= n  # step f gives frame f (own_delay 1): every frame's answer heard


def test_a_translation_is_said_to_the_end():
    """The file ends in speech: the marker follows it and the session goes on until the EOS
    answering it, and the frames after it that its audio takes, were played."""
    model = _eos_tied(moshi_mlx.load("random-tiny-hibiki-zero", seed=1))
    pipe, n = _session(model, 1.0, end_policy=SilencePolicy())
    assert pipe.stats.end_markers == 1 and pipe.stats.turns_done == 1
    assert pipe.last_marker_frame >= n - 1 and pipe.last_answer_frame >= pipe.last_marker_frame
    assert pipe.last_output_frame >= pipe.last_answer_frame + input_end(model).tail


def test_a_translation_that_never_ends_stops_at_the_cap(monkeypatch):
    monkeypatch.setattr(translation, "TRANSLATION_TAIL_FRAMES", 10)
    pipe, n = _session(moshi_mlx.load("random-tiny-hibiki-zero"), 0.5, end_policy=SilencePolicy())
    assert pipe.stats.end_markers == 1 and pipe.stats.turns_done == 0  # random weights: no EOS
    assert n + 10 <= pipe.stats.frames_in <= n + 10 + 1 + 25 + 2  # the file, the wait, the tail, the drain


def test_no_second_marker_when_the_pause_already_ended_the_turn():
    """Speech, then a pause longer than --end-silence at the end of the file: the policy's marker
    ended the turn, the file's end adds none."""
    model = _eos_tied(moshi_mlx.load("random-tiny-hibiki-zero", seed=1))
    x = np.concatenate([np.random.default_rng(0).standard_normal(12000) * 0.1, np.zeros(24000)]).astype(np.float32)
    gen = model.generator(temp=0.0, temp_text=0.0)
    opts = LiveOptions(max_lag_ms=None, end_policy=SilencePolicy(silence_s=0.5))
    res = run_session(model, gen, opts, source=x, out=_Null(), log=_Null())
    assert res.pipe.stats.end_markers == 1 and res.pipe.stats.turns_done == 1


class _HungUp:
    def write(self, s):
        raise OSError(5, "Input/output error")  # a terminal that hung up

    def flush(self):
        pass


def test_status_lines_that_cannot_be_written_do_not_stop_the_saving(tmp_path):
    """The status lines' terminal is gone (EIO: ssh dropped, window closed): the session runs and
    saves the recording and the transcript. The first status line's EIO ended the session, and
    'recording saved' failing skipped the transcript's save."""
    x = (np.random.default_rng(0).standard_normal(24000) * 0.1).astype(np.float32)
    model = moshi_mlx.load("random-tiny")
    opts = LiveOptions(max_lag_ms=None, record=str(tmp_path / "r.wav"), transcript=str(tmp_path / "t.json"))
    res = run_session(model, model.generator(temp=0.0, temp_text=0.0), opts, source=x, out=_Null(), log=_HungUp())
    assert res.code == 0 and (tmp_path / "t.json").is_file() and (tmp_path / "r.wav").stat().st_size > 44
