"""Translation (Hibiki, Hibiki-Zero): the end-of-input marker through the one pipeline, the
live silence policy, and a file's translation cut at the model's EOS."""

import mlx.core as mx
import numpy as np
import pytest

import moshi_mlx
from moshi_mlx.constants import FRAME_SIZE, TEXT_EOS_ID
from moshi_mlx.errors import UsageError
from moshi_mlx.runtime.pipeline import DuplexPipeline
from moshi_mlx.runtime.translation import SilencePolicy, cut_at_eos, end_of_input_frame, translation_end

from .fakes import FRAME, EchoGen, TagCodec, tagged_input

MARKER = np.full(8, 2048)


def _run(p, *pushes):
    events = []
    p.on_text = events.append
    p.start()
    for x in pushes:
        if x is None:
            p.push_end_of_input()
        else:
            p.push_input(x, wait=True)
    p.close_input()
    assert p.finished.wait(10)
    return events


def test_end_of_input_pads_the_partial_frame_then_sends_one_marker():
    """5 whole frames and half a frame, then the end: the half frame is completed with silence
    (its tag halves), the next frame is all 2048, what follows is a new frame."""
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, end_of_input=MARKER)
    half = np.full(FRAME // 2, 0.006, np.float32)
    events = _run(p, np.concatenate([tagged_input(5), half]), None, np.full(FRAME, 0.007, np.float32))
    assert [e.token for e in events] == [0, 1, 2, 3, 4, 3, 2048, 7]
    assert p.stats.end_markers == 1 and p.stats.frames_in == 8


def test_an_eos_answers_the_marker_only_after_it():
    """EchoGen's text is the frame's tag: a 2 (the text EOS) before the marker is no end of turn,
    the first 2 after it is, and only that one."""
    assert TEXT_EOS_ID == 2
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, end_of_input=MARKER)
    two = np.full(FRAME, 0.002, np.float32)
    events = _run(p, two, None, tagged_input(2), two, two)
    assert [e.token for e in events] == [2, 2048, 0, 1, 2, 2]
    assert [e.end_of_turn for e in events] == [False, False, False, False, True, False]
    assert p.stats.turns_done == 1


def test_a_model_without_marker_refuses_end_of_input():
    p = DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None)
    with pytest.raises(UsageError, match="no end-of-input marker"):
        p.push_end_of_input()
    # a pause policy too (it was dropped silently: model.pipeline(end_policy=...) on Moshi)
    with pytest.raises(UsageError, match="an end_policy needs a translation model"):
        DuplexPipeline(TagCodec(), EchoGen(), 8, max_lag_ms=None, end_policy=SilencePolicy())


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(silence_s=-1), "silence_s must be > 0, got -1"),
        (dict(silence_s=float("nan")), "silence_s must be a finite number"),
        (dict(threshold_db=5), "threshold_db must be <= 0, got 5"),
        (dict(threshold_db="x"), "threshold_db must be a number, got 'x'"),
    ],
)
def test_silence_policy_checks_its_values(kw, match):
    """The API's policy is checked as --end-silence / --end-threshold-db are (it took any value)."""
    with pytest.raises(UsageError, match=match):
        SilencePolicy(**kw)
    assert SilencePolicy(silence_s=None).silence_s is None  # "off"


def test_silence_policy_ends_a_turn_after_the_pause():
    """-45 dBFS threshold, 1.5 s: the 19th quiet frame after speech (19 x 80 ms >= 1.5 s) is the
    marker; silence before any speech, or a second pause without new speech, sends nothing."""
    pol = SilencePolicy(silence_s=1.5, threshold_db=-45.0)
    loud, quiet = np.full(FRAME, 0.1, np.float32), np.full(FRAME, 1e-3, np.float32)  # -20, -60 dBFS
    assert not any(pol.frame(quiet) for _ in range(40))
    assert not any(pol.frame(loud) for _ in range(5))
    marks = [pol.frame(quiet) for _ in range(40)]
    assert marks.index(True) == 18 and sum(marks) == 1
    assert not any(pol.frame(loud) for _ in range(3))
    assert [pol.frame(quiet) for _ in range(19)][-1]
    assert not any(SilencePolicy(silence_s=None).frame(quiet) for _ in range(100))


def test_silence_policy_in_the_pipeline():
    p = DuplexPipeline(
        TagCodec(), EchoGen(), 8, max_lag_ms=None, end_of_input=MARKER, end_policy=SilencePolicy(silence_s=0.4)
    )
    speech = np.full(3 * FRAME, 0.05, np.float32)
    events = _run(p, speech, np.zeros(8 * FRAME, np.float32))
    tokens = [e.token for e in events]
    assert tokens == [50, 50, 50, 0, 0, 0, 0, 2048, 0, 0, 0] and p.stats.end_markers == 1


def test_marker_frame_and_eos_helpers():
    assert (
        end_of_input_frame(1) == 1 and end_of_input_frame(FRAME_SIZE) == 1 and end_of_input_frame(FRAME_SIZE + 1) == 2
    )
    assert cut_at_eos([5, 3, 2, 9], 3) == (2, True)
    assert cut_at_eos([5, 9, 3, 3], 3) == (1, False)
    # an EOS before the marker is padding; the one answering it cuts
    assert translation_end([5, 2, 9, 3], [], 3) == 2
    assert translation_end([5, 2, 9, 2], [3], 3) == 3


def _eos_tied(model, gain: float = 40.0):
    """The demo translation model with its text EOS tied to the end-of-input marker (as the
    parity fixture's weights, scripts/make_fixtures_lm.py): row `card` of the source
    embeddings + gain x v, of its own - gain x v (they cancel where `card` is the initial
    token), text_linear's EOS row = v."""
    lm, cfg = model.lm, model.cfg
    v = np.random.default_rng(7).standard_normal(cfg.dim).astype(np.float32)
    v /= np.linalg.norm(v)
    w = np.array(lm.text_linear.weight)
    w[TEXT_EOS_ID] = v
    lm.text_linear.weight = mx.array(w).astype(lm.text_linear.weight.dtype)
    for k, emb in enumerate(lm.audio_embs):
        e = np.array(emb.weight)
        e[cfg.card] += (gain if k >= cfg.dep_q else -gain) * v
        emb.weight = mx.array(e).astype(emb.weight.dtype)
    return model


def test_file_translation_stops_at_eos_and_is_cut_there(tmp_path):
    """respond(): a warm-up frame, the source, the marker at ceil(duration x 12.5) (after the
    warm-up), silence until the EOS answering it; audio and transcript end at that EOS."""
    model = _eos_tied(moshi_mlx.load("random-tiny-hibiki-zero", seed=1))
    assert model.translates
    n = 20 * FRAME_SIZE + 500  # 20.26 frames: the marker is source frame 21
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    r = model.respond(
        x,
        sample_rate=24000,
        temp=0.0,
        temp_text=0.0,
        out_path=tmp_path / "out.wav",
        transcript_path=tmp_path / "out.json",
    )
    marker_step = 1 + end_of_input_frame(n)  # the warm-up frame is step 0
    assert r.user_codes[marker_step] == [model.cfg.card] * model.cfg.user_q
    assert all(c != [model.cfg.card] * model.cfg.user_q for i, c in enumerate(r.user_codes) if i != marker_step)
    texts = [r.prefix_text_token] + [t for _, t, _ in r.tokens]
    eos = [p for p, t in enumerate(texts) if t == TEXT_EOS_ID and p > marker_step]
    assert eos, "the tied weights answer the marker with EOS"
    assert len(r.audio) == eos[0] * FRAME_SIZE
    assert r.frames < marker_step + 40, "stopped soon after the EOS, not after the whole tail"
    assert all(w.start < eos[0] * 0.08 for w in r.transcript.words)
    assert (tmp_path / "out.wav").exists() and (tmp_path / "out.json").exists()


def test_end_input_is_for_translation_models():
    model = moshi_mlx.load("random-tiny", seed=1)
    with model.conversation() as conv:
        with pytest.raises(UsageError, match="translation models"):
            conv.end_input()


def test_browser_conversation_ends_turns_after_a_pause():
    """moshi-web with a translation model: the page's conversation sends the marker after the
    speaker's pause (SilencePolicy's 1.5 s), and the EOS answering it reaches the page as a
    new line."""
    from moshi_mlx.web.conversation import Conversation, Engine

    model = _eos_tied(moshi_mlx.load("random-tiny-hibiki-zero", seed=1))
    engine = Engine.from_model(model, seed=1, temp=0.0, temp_text=0.0)
    pieces = []
    conv = Conversation(engine, 24000, engine.defaults, on_text=lambda p, t: pieces.append((p, t)), max_lag_ms=None)
    speech = (np.random.default_rng(0).standard_normal(10 * FRAME_SIZE) * 3000).astype(np.int16)
    for block in (speech, np.zeros(25 * FRAME_SIZE, np.int16)):
        conv.feed(block.tobytes())
    conv.pipe.close_input()
    assert conv.pipe.finished.wait(30)
    assert conv.pipe.stats.end_markers == 1 and conv.pipe.stats.turns_done == 1
    assert [p for p, _ in pieces].count("\n") == 1
    conv.close()


def test_hibiki_2b_shape_gets_the_same_file_path():
    """Hibiki 2B's shape (a LUT `description` conditioner, CFG as its run_inference uses, no
    depformer norm): the same framing and the same cut at the EOS answering the marker."""
    from moshi_mlx.models import random_lm, random_mimi
    from moshi_mlx.models.config import LmConfig, preset
    from moshi_mlx.runtime.codec import MimiFrameCodec
    from moshi_mlx.runtime.loading import demo_mimi_config
    from moshi_mlx.runtime.model import Model
    from moshi_mlx.runtime.transcript import PlaceholderTokenizer

    d = preset("random-tiny-hibiki-zero").to_dict()
    d.pop("depformer_norm")
    d["conditioners"] = {
        "description": {
            "type": "lut",
            "lut": {
                "n_bins": 31,
                "dim": 16,
                "tokenizer": "noop",
                "possible_values": ["very_bad", "bad", "neutral", "good", "very_good"],
            },
        }
    }
    d["fuser"] = {"sum": ["description"]}
    cfg = LmConfig.from_dict(d)
    mimi = random_mimi(seed=1, num_codebooks=cfg.user_q, config=demo_mimi_config())
    model = _eos_tied(
        Model(
            cfg,
            random_lm(cfg, seed=1),
            MimiFrameCodec(mimi, n_encode=cfg.user_q),
            PlaceholderTokenizer(),
            "hibiki-2b-shaped",
        )
    )
    assert model.translates
    n = 12 * FRAME_SIZE
    x = np.random.default_rng(1).standard_normal(n).astype(np.float32) * 0.1
    r = model.respond(x, sample_rate=24000, temp=0.0, temp_text=0.0, cfg_coef=3.0)
    marker_step = 1 + end_of_input_frame(n)
    texts = [r.prefix_text_token] + [t for _, t, _ in r.tokens]
    eos = [p for p, t in enumerate(texts) if t == TEXT_EOS_ID and p > marker_step]
    assert eos and len(r.audio) == eos[0] * FRAME_SIZE
