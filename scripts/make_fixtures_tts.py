"""Regenerate tests/fixtures/tts/*.npz from Kyutai's PyTorch `moshi` 0.2.13 (the oracle).

Run:  NO_TORCH_COMPILE=1 .venv/bin/python scripts/make_fixtures_tts.py [case ...]
(torch==2.13.0 and `pip install --no-deps moshi==0.2.13` + einops/safetensors in that venv).

Each case builds the reference `LMModel` of a reduced-width TTS config with the structure of
kyutai/tts-1.6b-en_fr (cross-attention to a `speaker_wavs` tensor conditioner, `control`
and — for the distilled case — `cfg` LUT conditioners, demuxed lookahead text stream,
32 codebooks with the scheduled depformer, delays [0, 0, 2 x 31], 1.28 s text-to-audio
delay) in float32 with seeded numpy weights in the released layout
(`moshi_mlx.weights.random_state`), then runs the reference `TTSModel.generate` greedily
(temperature 0) on a fixed two-turn script with a break, tokenized by our demo
`ByteTokenizer` (upstream's `script_to_entries` only calls `.encode`). Recorded: the entries,
every frame (text token fed + audio tokens), the (predicted, fed) text of every step, the
end step, the transcript and the consumption times. The text head's rows for NEW_WORD (0)
and PAD (3) are scaled by `boost` so a random model predicts both sometimes and every branch
of the state machine runs (the test applies the same scaling).
"""

from __future__ import annotations

import json
import sys
import time

from _oracle import ROOT, reference_lm, save_case  # first: the oracle's environment

import numpy as np
import torch
from moshi.conditioners import ConditionAttributes, TensorCondition
from moshi.models.tts import StateMachine, TokenIds, TTSModel, script_to_entries

from moshi_mlx.models.config import LmConfig
from moshi_mlx.runtime.transcript import ByteTokenizer
from moshi_mlx.weights.random_state import random_state

OUT = ROOT / "tests" / "fixtures" / "tts"
SCRIPT = [
    "Hello world, this is a test of the speech machine.",
    'Bonjour: <break time="0.4s"/> comment ça (vraiment) va aujourd’hui?',
]

_NARROW = {
    "card": 2048,
    "n_q": 32,
    "dep_q": 32,
    "delays": [0, 0] + [2] * 31,
    "dim": 128,
    "text_card": 8000,
    "existing_text_padding_id": 3,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 500,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 64,
    "depformer_num_heads": 4,
    "depformer_num_layers": 2,
    "depformer_dim_feedforward": 192,
    "depformer_multi_linear": True,
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "depformer_low_rank_embeddings": 16,
    "demux_second_stream": True,
    "text_card_out": None,
    "cross_attention": True,
    "conditioners": {
        "speaker_wavs": {"type": "tensor", "tensor": {"dim": 512}},
        "cfg": {
            "type": "lut",
            "lut": {
                "n_bins": 7,
                "dim": 16,
                "tokenizer": "noop",
                "possible_values": ["1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0"],
            },
        },
        "control": {"type": "lut", "lut": {"dim": 32, "n_bins": 1, "tokenizer": "noop", "possible_values": ["ok"]}},
    },
    "fuser": {
        "cross_attention_pos_emb": True,
        "cross_attention_pos_emb_scale": 1,
        "sum": ["control", "cfg"],
        "prepend": [],
        "cross": ["speaker_wavs"],
    },
    "tts_config": {"audio_delay": 1.28, "second_stream_ahead": 2},
    "model_id": {"sig": "00000000", "epoch": 0},
    "depformer_weights_per_step_schedule": list(range(8)) + [8] * 8 + [9] * 8 + [10] * 8,
    "model_type": "tts",
}
_NO_DISTILL = dict(
    _NARROW,
    layer_scale=0.3,
    conditioners={k: v for k, v in _NARROW["conditioners"].items() if k != "cfg"},
    fuser=dict(_NARROW["fuser"], sum=["control"]),
)

# kyutai/tts-0.75b-en-public's structure (public code: moshi's TTSModel takes its voice as an
# audio prefix, no speaker cross-attention, real CFG; a C++ port's config reader: 16 codebooks,
# text_card_out 5, cross_attention false, a 16-entry schedule, dim 1024 x 24 layers): at
# narrow widths, with no conditioner (moshi's simple_generate passes it no condition at all)
_PREFIX = dict(
    _NARROW,
    n_q=16,
    dep_q=16,
    delays=[0, 0] + [2] * 15,
    text_card_out=5,
    cross_attention=False,
    conditioners={},
    fuser={"sum": [], "prepend": [], "cross": []},
    depformer_weights_per_step_schedule=list(range(8)) + [8] * 8,
    model_id={"sig": "00000001", "epoch": 0},
)
_PREFIX.pop("cross_attention")

# name -> (config, weight seed, cfg_coef, n_q, padding_between, boost)
CASES = {
    "tts_narrow": (_NARROW, 11, 2.0, 32, 1, 4.0),
    "tts_narrow_cfg": (_NO_DISTILL, 12, 2.0, 24, 0, 4.0),
    # a 40-step attention context: the KV ring wraps several times within the utterance
    "tts_narrow_ctx": (dict(_NARROW, context=40), 13, 3.0, 32, 1, 4.0),
    # audio-prefix voice (16 frames of codes), real CFG with the prefix masked in the null row
    "tts_prefix_cfg": (_PREFIX, 14, 2.0, 16, 1, 4.0),
    "tts_prefix": (dict(_PREFIX, layer_scale=0.3), 15, 1.0, 16, 0, 4.0),
}
PREFIX_T = 16
VOICE_T = 125
MAX_STEPS = 400


def voice(seed: int, dim: int) -> np.ndarray:
    """A random voice embedding [dim, T] (the layout of a `speaker_wavs` file without its batch axis)."""
    return np.random.default_rng(500 + seed).standard_normal((dim, VOICE_T), dtype=np.float32)


def run_case(name: str) -> None:
    cfg_dict, seed, cfg_coef, n_q, padding_between, boost = CASES[name]
    cfg = LmConfig.from_dict(cfg_dict)
    t0 = time.time()
    state = random_state(cfg, seed)
    state["text_linear.weight"][[0, 3]] *= boost
    lm = reference_lm(cfg_dict, state)

    tok = ByteTokenizer()
    token_ids = TokenIds(lm.text_card + 1)
    tts = cfg_dict["tts_config"]
    machine = StateMachine(
        token_ids=token_ids, second_stream_ahead=tts["second_stream_ahead"], max_padding=8, initial_padding=2
    )
    distilled = "cfg" in cfg_dict["conditioners"]
    model = TTSModel(
        lm=lm,
        mimi=None,
        tokenizer=tok,
        voice_suffix="",
        voice_repo="",
        machine=machine,
        delay_steps=int(tts["audio_delay"] * 12.5),
        temp=0.0,
        cfg_coef=1.0 if distilled else cfg_coef,
        n_q=n_q,
        max_gen_length=MAX_STEPS,
    )
    multi = model.multi_speaker
    entries = script_to_entries(tok, token_ids, 12.5, SCRIPT, multi_speaker=multi, padding_between=padding_between)
    prefix_codes = None
    if not multi:  # the voice as an audio prefix: what TTSModel.get_prefix builds from Mimi codes
        prefix_codes = prefix(seed, cfg.n_q, cfg.card)
        pre = torch.cat([torch.full((1, PREFIX_T), token_ids.zero), torch.from_numpy(prefix_codes)], dim=0)
        frames = []
        with torch.no_grad():
            res = model.generate(
                [entries],
                [ConditionAttributes(text={}, tensor={})],
                prefixes=[pre],
                on_frame=lambda f: frames.append(f[0, :, 0].numpy().copy()),
            )
        record(
            name, cfg_dict, seed, cfg_coef, n_q, padding_between, boost, entries, frames, res, t0, prefix=prefix_codes
        )
        return

    dim = cfg_dict["conditioners"]["speaker_wavs"]["tensor"]["dim"]
    v = torch.from_numpy(voice(seed, dim))
    tensor = torch.zeros(1, 5, VOICE_T, dim)
    mask = torch.zeros(1, 5, VOICE_T, dtype=torch.bool)
    tensor[:, 0] = v.t()
    mask[:, 0] = True
    text = {"control": "ok"}
    if distilled:
        text["cfg"] = format(cfg_coef, ".1f")
    attributes = [
        ConditionAttributes(
            text=text, tensor={"speaker_wavs": TensorCondition(tensor.view(1, -1, dim), mask.view(1, -1))}
        )
    ]
    frames = []
    with torch.no_grad():
        res = model.generate([entries], attributes, on_frame=lambda f: frames.append(f[0, :, 0].numpy().copy()))
    record(name, cfg_dict, seed, cfg_coef, n_q, padding_between, boost, entries, frames, res, t0)


def prefix(seed: int, n_q: int, card: int) -> np.ndarray:
    """Random Mimi codes [n_q, PREFIX_T] standing for a voice recording."""
    return np.random.default_rng(600 + seed).integers(0, card, (n_q, PREFIX_T)).astype(np.int64)


def record(name, cfg_dict, seed, cfg_coef, n_q, padding_between, boost, entries, frames, res, t0, prefix=None):
    out = {
        "config": np.array(json.dumps(cfg_dict)),
        "seed": np.array(seed),
        "cfg_coef": np.array(cfg_coef),
        "n_q": np.array(n_q),
        "padding_between": np.array(padding_between),
        "boost": np.array(boost),
        "script": np.array(json.dumps(SCRIPT)),
        "max_steps": np.array(MAX_STEPS),
        "entries": np.array(json.dumps([[e.tokens, e.text, e.padding] for e in entries])),
        "frames": np.stack(frames),
        "text_log": np.array(res.logged_text_tokens[0], dtype=np.int64),
        "end_step": np.array(-1 if res.end_steps[0] is None else res.end_steps[0]),
        "transcript": np.array(json.dumps(res.all_transcripts[0])),
        "consumption_times": np.array(res.all_consumption_times[0], dtype=np.int64),
    }
    if prefix is not None:
        out["prefix"] = prefix
    save_case(
        OUT, name, out, t0, f"{len(frames)} frames, {len(res.logged_text_tokens[0])} steps, end_step {res.end_steps[0]}"
    )


if __name__ == "__main__":
    for case in sys.argv[1:] or list(CASES):
        run_case(case)
