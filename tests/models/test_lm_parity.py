"""Parity with Kyutai's PyTorch `moshi` (fixtures from scripts/make_fixtures_lm.py).

The weights are rebuilt here from the same seeded numpy RNG in the released PyTorch layout,
so these tests also exercise the PyTorch -> MLX key mapping. float32 throughout.
"""

import numpy as np
import pytest

from moshi_mlx.models import LmGen
from moshi_mlx.models.backend import ComputeFormat
from moshi_mlx.models.frame_step import compiled_step_supported
from moshi_mlx.runtime.translation import cut_at_eos, end_of_input_codes

from .lm_fixtures import AUDIO_STRIDE, TEXT_STRIDE, load_case, rel_err

CASES = ["moshi7b_narrow", "hibiki2b_narrow", "tiny_context", "variants", "moshi7b_real_width", "hibiki_zero_narrow"]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    cfg, lm, data = load_case(request.param)
    yield request.param, cfg, lm, data
    del lm


def test_teacher_forced_forward_matches_reference(case):
    name, cfg, lm, data = case
    cond = {"description": "very_good"} if cfg.conditioners else None
    out = lm.forward_train(data["codes"], condition=cond)
    text = np.array(out.text_logits[0])[:, ::TEXT_STRIDE]
    mask = data["text_mask"]
    assert np.array_equal(np.array(out.text_mask[0]), mask)
    assert rel_err(text[mask], data["text_logits"][mask]) < 1e-4
    if cfg.dep_q:
        audio = np.array(out.audio_logits[0])[..., ::AUDIO_STRIDE]
        amask = data["audio_mask"]
        assert np.array_equal(np.array(out.audio_mask[0]), amask)
        assert rel_err(audio[amask], data["audio_logits"][amask]) < 1e-4


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_greedy_generation_matches_reference(case, compiled):
    """We are fed [u0, u1, ...]; the reference LMGen was fed [x, u0, u1, ...]: reference
    step s == our position s, and our call t runs position t + 1. Both frame steps: the
    eager one and the compiled fixed-shape one (models/frame_step.py, the GPU path)."""
    name, cfg, lm, data = case
    gen = LmGen(
        lm, temp=0.0, temp_text=0.0, cfg_coef=float(data["cfg_coef"]), compute=ComputeFormat(compiled=compiled)
    )  # as stored (float32), the step compiled or not
    assert gen.compiled == (compiled and compiled_step_supported(lm) is None)
    ref_text, ref_audio, user = data["gen_text"], data["gen_audio"], data["user"]
    steps = user.shape[0]
    delays = np.array(cfg.delays[1 : 1 + cfg.dep_q])
    D = gen.own_delay
    checked = {int(s): i for i, s in enumerate(data["gen_logit_steps"])}
    texts = []
    for t in range(steps):
        text, audio = gen.step(user[t])
        if t == 0:
            texts.append(gen.prefix_text_token)
        texts.append(text)
        p = t + 1
        assert texts == ref_text[: p + 1].tolist(), f"{name}: text differs first at position {len(texts) - 1}"
        f = p - D
        if cfg.dep_q and f >= 0:
            expected = [int(ref_audio[f + d, k]) for k, d in enumerate(delays)]
            assert audio == expected, f"{name}: audio frame {f} differs (position {p})"
        elif cfg.dep_q:
            assert audio is None
        if p in checked:
            ours = np.array(gen.last_text_logits[0])
            i = checked[p]
            assert rel_err(ours[::TEXT_STRIDE], data["gen_text_logits"][i]) < 1e-4
            top = data["gen_text_top"][p]
            assert rel_err(ours[top], data["gen_text_top_logits"][p]) < 1e-4


def test_hibiki_zero_case_has_every_feature_and_the_marker():
    """The Hibiki-Zero fixture is what it claims: each structural feature is on, and its input
    holds the end-of-input marker after 180 frames, silence after, and the reference's text
    has the EOS after the marker (so the greedy parity above covers both)."""
    _, _, data = load_case("hibiki_zero_narrow")
    from moshi_mlx.models.config import LmConfig
    import json

    cfg = LmConfig.from_dict(json.loads(str(data["config"])))
    assert (cfg.kv_repeat, cfg.positional_embedding, cfg.hidden_scale, cfg.depformer_dim_feedforward) == (
        2,
        "rope_concat",
        6,
        None,
    )
    assert cfg.depformer_norm == "layer_norm" and cfg.dep_weights == 9 and (cfg.n_q, cfg.dep_q) == (32, 16)
    assert cfg.conditioners == {} and cfg.model_type == "hibiki"
    user = data["user"]
    marker = np.flatnonzero((user == end_of_input_codes(cfg)).all(axis=1)).tolist()
    assert marker == [180] and (user[181:] == user[-1]).all() and len(user) >= 200
    text = data["gen_text"].tolist()
    assert 2 in text and text.index(2) >= 181, "the reference answers the marker (read at position 181) with EOS"


def test_hibiki_zero_file_translation_matches_reference():
    """hibiki_zero's file loop (warm-up silence, the source with its marker, cut at the first
    EOS): fed [silence] + source, our position p gives its returned frame p; the cut and the
    text kept are the reference's."""
    cfg, lm, data = load_case("hibiki_zero_narrow")
    gen = LmGen(lm, temp=0.0, temp_text=0.0)
    user = data["user"]
    texts, frames = [], {}
    for t, u in enumerate([user[-1]] + list(user)):
        text, audio = gen.step(u)
        if t == 0:
            texts.append(gen.prefix_text_token)
        texts.append(text)
        if audio is not None:
            frames[t + 1 - gen.own_delay] = audio
    ref = data["ref_out_tokens"]
    n = ref.shape[0]
    assert texts[:n] == ref[:, 0].tolist()
    assert all(frames[f] == ref[f, 1:].tolist() for f in range(n - gen.own_delay))
    end, found = cut_at_eos(texts[:n], cfg.existing_text_padding_id)
    assert found and end == int(data["ref_eos_idx"])
    kept = [t for t in texts[:end] if t > cfg.existing_text_padding_id]
    assert kept == data["ref_kept_text"].tolist()
