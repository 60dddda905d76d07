"""Regenerate tests/fixtures/text/*.npz (speech-to-text and text-only generation) from Kyutai's
PyTorch `moshi` 0.2.13 (the oracle), as scripts/make_fixtures_lm.py does for Moshi/Hibiki.

Run with a venv that has torch and moshi:  NO_TORCH_COMPILE=1 .venv/bin/python scripts/make_fixtures_text.py [case ...]

Each case builds the reference `LMModel` in float32 from seeded numpy weights in the released
PyTorch layout (`moshi_mlx.weights.random_state`, so the tests rebuild the same weights
without torch) at reduced width but with the real structure of the published model:

- `stt1b_narrow`, `stt2b6_narrow`: kyutai/stt-1b-en_fr and kyutai/stt-2.6b-en (dep_q 0,
  32 audio streams in, all stream delays 0, their contexts, vocabularies and, for the 1B, the
  4 extra (voice-activity) heads). The user stream follows the STT recipe of the published
  scripts: `audio_silence_prefix_seconds` of silence frames, the "speech", then
  `audio_delay_seconds + 1` s of silence frames. Recorded: greedy `LMGen.step_with_extra_heads`
  text tokens and the heads' softmax at every step, text logits at a few steps.
- `stt_e2e_small`: end to end, audio in: a deterministic clip padded by the STT recipe of
  Kyutai's scripts (`audio_silence_prefix_seconds` = 1 s of zeros in samples before it,
  `audio_delay_seconds + 1` s after, full frames kept), encoded by the reference
  `MimiModel` in streaming mode with the committed small Mimi of tests/fixtures/mimi (8
  codebooks of 64), then the STT LM (same structure, 8 codebooks in) greedy with its extra
  heads. The reference `LMGen` overwrites its first frame with initial tokens, so it gets a
  dummy frame first (models/generate.py); every Mimi frame is then consumed by both.
- `helium_narrow`: Helium 1 preview 2B (text only, n_q 0, text_card_out != text_card); the
  prompt (BOS = 1, then token ids) is fed one token at a time to the streaming
  `forward_text`, then greedy tokens are fed back. `moshi_text`: the same with the temporal
  transformer of a Moshi 7B-shaped model, every audio stream given the zero token (-1) and
  the text stream starting from its initial token.
"""

from __future__ import annotations

import json
import math
import sys
import time

from _oracle import ROOT, reference_lm, save_case  # first: the oracle's environment

import numpy as np
import torch
from moshi.models import LMGen, loaders

from moshi_mlx.models.config import LmConfig
from moshi_mlx.weights.random_state import random_state

OUT = ROOT / "tests" / "fixtures" / "text"
TEXT_STRIDE = 16
FRAME_RATE = 12.5

_STT_1B = {  # kyutai/stt-1b-en_fr at width 128 (real: dim 2048, 16 heads, 16 layers)
    "dim": 128,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "context": 750,
    "max_period": 100000,
    "text_card": 8000,
    "existing_text_padding_id": 3,
    "n_q": 32,
    "dep_q": 0,
    "card": 2048,
    "delays": [0] * 33,
    "causal": True,
    "layer_scale": None,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "extra_heads_num_heads": 4,
    "extra_heads_dim": 6,
    "model_type": "stt",
    "stt_config": {"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.0},
}
_STT_2B6 = dict(  # kyutai/stt-2.6b-en at width 128 (real: dim 2048, 32 heads, 48 layers)
    _STT_1B,
    num_layers=3,
    context=375,
    text_card=4000,
    extra_heads_num_heads=0,
    stt_config={"audio_delay_seconds": 2.5, "audio_silence_prefix_seconds": 1.0},
    lm_gen_config={"temp": 0.0, "temp_text": 0.0, "top_k": 250, "top_k_text": 50},
)
_HELIUM = {  # Helium 1 preview 2B at width 128 (real: dim 2560, 20 heads, 24 layers)
    "dim": 128,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "context": 4096,
    "max_period": 100000,
    "text_card": 47999,
    "text_card_out": 48000,
    "n_q": 0,
    "dep_q": 0,
    "card": 2048,
    "delays": [0],
    "causal": True,
    "layer_scale": None,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "model_type": "helium",
}
_MOSHI = {  # Moshi 7B's temporal transformer at width 128 (the depformer is not used for text)
    "dim": 128,
    "text_card": 32000,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 2,
    "hidden_scale": 4.125,
    "causal": True,
    "layer_scale": None,
    "context": 3000,
    "max_period": 10000,
    "gating": "silu",
    "norm": "rms_norm_f32",
    "positional_embedding": "rope",
    "depformer_dim": 64,
    "depformer_dim_feedforward": 264,
    "depformer_num_heads": 4,
    "depformer_num_layers": 1,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}

_STT_E2E = dict(
    _STT_1B,
    n_q=8,
    card=64,
    delays=[0] * 9,
    context=250,
    stt_config={"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 1.0},
)
MIMI_FIXTURES = ROOT / "tests" / "fixtures" / "mimi"
E2E_SAMPLES = 329280  # 13.72 s: prefix + clip is a whole number of frames (184), + 18 tail frames

# name -> (config, weight seed, kind, speech frames (stt) or greedy tokens (text))
CASES = {
    "stt1b_narrow": (_STT_1B, 11, "stt", 200),
    "stt2b6_narrow": (_STT_2B6, 12, "stt", 170),
    "stt_e2e_small": (_STT_E2E, 15, "stt_e2e", E2E_SAMPLES),
    "helium_narrow": (_HELIUM, 13, "text", 200),
    "moshi_text": (_MOSHI, 14, "text", 60),
}


def stt_user_codes(cfg_dict: dict, rng, speech_frames: int) -> tuple[np.ndarray, int, int]:
    """Frames as the STT recipe feeds them: silence prefix, speech, delay + 1 s of silence.
    Silence is one fixed code frame (what a codec gives for zeros), speech random codes."""
    stt = cfg_dict["stt_config"]
    n_q, card = cfg_dict["n_q"], cfg_dict["card"]
    silence = rng.integers(0, card, n_q)
    prefix = math.ceil(stt["audio_silence_prefix_seconds"] * FRAME_RATE)
    suffix = math.ceil((stt["audio_delay_seconds"] + 1.0) * FRAME_RATE)
    speech = rng.integers(0, card, (speech_frames, n_q))
    frames = np.concatenate([np.tile(silence, (prefix, 1)), speech, np.tile(silence, (suffix, 1))])
    return frames.astype(np.int64), prefix, suffix


def run_stt(name: str, cfg_dict: dict, lm, rng, speech_frames: int, out: dict) -> str:
    user, prefix, suffix = stt_user_codes(cfg_dict, rng, speech_frames)
    steps = user.shape[0]
    texts, heads, logits = [], [], []
    gen = LMGen(
        lm,
        use_sampling=False,
        temp=0.0,
        temp_text=0.0,
        on_text_logits_hook=lambda lg: logits.append(lg[0, 0, 0].float().numpy().copy()),
    )
    frames = np.concatenate([np.full((1, user.shape[1]), 7), user], axis=0)  # reference step s = our position s
    with gen.streaming(1), torch.no_grad():
        for s in range(steps + 1):
            tokens, extra = gen.step_with_extra_heads(torch.from_numpy(frames[s])[None, :, None])
            texts.append(int(tokens[0, 0, 0]))
            heads.append(np.stack([h[0, -1].float().numpy() for h in extra]) if extra else np.zeros((0, 0)))
    checked = np.unique(np.linspace(0, steps, 8).astype(np.int64))
    out.update(
        user=user,
        prefix_frames=np.array(prefix),
        suffix_frames=np.array(suffix),
        gen_text=np.array(texts),
        gen_heads=np.stack(heads).astype(np.float32),
        gen_logit_steps=checked,
        gen_text_logits=np.stack([logits[s][::TEXT_STRIDE] for s in checked]),
    )
    return f"text[:12]={texts[:12]} distinct={len(set(texts))}"


def e2e_clip(n: int) -> np.ndarray:
    """Speech-like test audio stored as 16-bit PCM (exact on every platform): gliding
    harmonics switched on and off, a few syllables per second."""
    t = np.arange(n) / 24000.0
    f0 = 140 + 50 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24000.0
    x = (0.27 * np.sin(phase) + 0.1 * np.sin(3 * phase)) * (np.sin(2 * np.pi * 2.3 * t) > -0.3)
    return np.round(x * 32767).astype(np.int16)


def run_stt_e2e(name: str, cfg_dict: dict, lm, rng, n_samples: int, out: dict) -> str:
    from safetensors.numpy import load_file

    mimi_cfg = json.loads((MIMI_FIXTURES / "fixtures.json").read_text())["small"]["config"]
    mimi = loaders.get_mimi(None, mimi_config=mimi_cfg, device="cpu", num_codebooks=mimi_cfg["quantizer"]["n_q"])
    mimi.load_state_dict(
        {k: torch.from_numpy(v) for k, v in load_file(MIMI_FIXTURES / "small.safetensors").items()}, strict=True
    )
    mimi = mimi.float().eval()
    pcm16 = e2e_clip(n_samples)
    stt = cfg_dict["stt_config"]  # the recipe of moshi.run_inference / Kyutai's STT scripts
    pad_left = int(stt["audio_silence_prefix_seconds"] * 24000)
    pad_right = int((stt["audio_delay_seconds"] + 1.0) * 24000)
    x = np.concatenate([np.zeros(pad_left), pcm16 / 32768.0, np.zeros(pad_right)]).astype(np.float32)
    frames = [x[i : i + 1920] for i in range(0, len(x) - 1919, 1920)]
    texts, heads = [], []
    gen = LMGen(lm, use_sampling=False, temp=0.0, temp_text=0.0)
    with mimi.streaming(1), gen.streaming(1), torch.no_grad():
        codes = [mimi.encode(torch.from_numpy(f)[None, None]) for f in frames]
        for c in [torch.full_like(codes[0], 7)] + codes:
            tokens, extra = gen.step_with_extra_heads(c)
            texts.append(int(tokens[0, 0, 0]))
            heads.append(np.stack([h[0, -1].float().numpy() for h in extra]))
    all_codes = torch.cat(codes, dim=-1)[0].numpy()
    out.update(
        pcm16=pcm16,
        gen_text=np.array(texts),
        gen_heads=np.stack(heads).astype(np.float32),
        mimi_codes=all_codes.astype(np.int16),
    )
    return (
        f"{len(frames)} frames, text[:12]={texts[:12]} distinct={len(set(texts))}, "
        f"distinct codes level 0: {len(np.unique(all_codes[0]))}"
    )


def run_text(name: str, cfg_dict: dict, lm, rng, n_tokens: int, out: dict) -> str:
    cfg = LmConfig.from_dict(cfg_dict)
    start = 1 if cfg.n_q == 0 else cfg.text_initial_token  # Helium's BOS; a Moshi stream's initial token
    prompt = [start] + rng.integers(4, cfg.text_card, 11).tolist()
    tokens, logits = [], []

    def step(tok: int) -> np.ndarray:
        seq = torch.full((1, 1 + cfg.n_q, 1), -1, dtype=torch.long)  # audio streams: the zero token
        seq[0, 0, 0] = tok
        _, lg = lm.forward_text(seq)
        return lg[0, 0, -1].float().numpy().copy()

    with lm.streaming(1), torch.no_grad():
        for t in prompt:
            lg = step(t)
        for _ in range(n_tokens):
            logits.append(lg)
            tok = int(np.argmax(lg))
            tokens.append(tok)
            lg = step(tok)
    checked = np.unique(np.linspace(0, n_tokens - 1, 8).astype(np.int64))
    out.update(
        prompt=np.array(prompt),
        gen_text=np.array(tokens),
        gen_logit_steps=checked,
        gen_text_logits=np.stack([logits[s][::TEXT_STRIDE] for s in checked]),
    )
    return f"tokens[:12]={tokens[:12]} distinct={len(set(tokens))}"


def run_case(name: str) -> None:
    cfg_dict, seed, kind, n = CASES[name]
    cfg = LmConfig.from_dict(cfg_dict)
    t0 = time.time()
    state = random_state(cfg, seed)
    lm = reference_lm(cfg_dict, state)
    rng = np.random.default_rng(2000 + seed)
    out: dict[str, np.ndarray] = {
        "config": np.array(json.dumps(cfg_dict)),
        "seed": np.array(seed),
        "kind": np.array(kind),
    }
    run = {"stt": run_stt, "stt_e2e": run_stt_e2e, "text": run_text}[kind]
    info = run(name, cfg_dict, lm, rng, n, out)
    save_case(OUT, name, out, t0, info)


if __name__ == "__main__":
    for case in sys.argv[1:] or list(CASES):
        run_case(case)
