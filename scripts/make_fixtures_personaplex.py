"""Regenerate tests/fixtures/persona/ from NVIDIA's PyTorch PersonaPlex code (the oracle).

NVIDIA's fork of moshi installs under the import name `moshi`, like Kyutai's, so it lives in
its own venv (see docs/personaplex.md):
    python3 -m venv /work/ref-pp && /work/ref-pp/bin/pip install torch numpy safetensors sentencepiece \
        einops sphn pyloudnorm && /work/ref-pp/bin/pip install --no-deps <NVIDIA/personaplex>/moshi
    /work/ref-pp/bin/python scripts/make_fixtures_personaplex.py

Random float32 weights (`moshi_mlx.weights.random_state`, seeded numpy) in PersonaPlex's
real PyTorch layout (475 tensors at narrow widths: 16 depformer slices) are loaded strictly
into NVIDIA's `LMModel` (dep_q 16); the committed small Mimi (tests/fixtures/mimi/small)
encodes the voice. Greedy `LMGen` runs `step_system_prompts` (voice WAV, silence, text
prompt, silence) then a conversation on random user codes, and every `step` output is
recorded, prompt frames included. A second run replays the voice from the `.pt` file that
NVIDIA's `save_voice_prompt_embeddings` writes (a preset's format), committed too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from moshi.models.compression import MimiModel  # noqa: E402
from moshi.models.lm import LMGen, LMModel  # noqa: E402
from moshi.modules import SEANetDecoder, SEANetEncoder, transformer  # noqa: E402
from moshi.quantization import SplitResidualVectorQuantizer  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from moshi_mlx.models.config import LmConfig  # noqa: E402
from moshi_mlx.weights.lm_keys import pytorch_layout  # noqa: E402
from moshi_mlx.weights.random_state import random_state  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "persona"
MIMI = ROOT / "tests" / "fixtures" / "mimi"
SEED = 7
CONVERSATION = 160
VOICE_SECONDS = 1.5

# PersonaPlex's architecture (NVIDIA's loaders._lm_kwargs, dep_q 16): every layer, narrow widths
NARROW = {
    "dim": 128,
    "text_card": 32000,
    "existing_text_padding_id": 3,
    "n_q": 16,
    "dep_q": 8,
    "checkpoint_dep_q": 16,
    "card": 2048,
    "num_heads": 4,
    "num_layers": 32,
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
    "depformer_num_layers": 6,
    "depformer_causal": True,
    "depformer_layer_scale": None,
    "depformer_multi_linear": True,
    "depformer_context": 8,
    "depformer_max_period": 10000,
    "depformer_gating": "silu",
    "depformer_pos_emb": "none",
    "depformer_weights_per_step": True,
    "delays": [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
    "model_type": "personaplex",
}


def reference_lm(state: dict[str, np.ndarray]) -> LMModel:
    kwargs = {k: v for k, v in NARROW.items() if k not in ("model_type", "checkpoint_dep_q")}
    kwargs["dep_q"] = 16
    lm = LMModel(device="cpu", dtype=torch.float32, **kwargs)
    missing, unexpected = lm.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    assert not missing and not unexpected
    return lm.eval()


def reference_mimi() -> MimiModel:
    cfg = json.loads((MIMI / "fixtures.json").read_text())["small"]["config"]
    enc, dec = SEANetEncoder(**cfg["seanet"]), SEANetDecoder(**cfg["seanet"])
    tr = cfg["transformer"]
    m = MimiModel(
        enc,
        dec,
        SplitResidualVectorQuantizer(**cfg["quantizer"]),
        channels=1,
        sample_rate=24000,
        frame_rate=12.5,
        encoder_frame_rate=24000 / enc.hop_length,
        causal=True,
        resample_method="conv",
        encoder_transformer=transformer.ProjectedTransformer(device="cpu", **tr),
        decoder_transformer=transformer.ProjectedTransformer(device="cpu", **tr),
    )
    m.load_state_dict({k: torch.from_numpy(v) for k, v in load_file(str(MIMI / "small.safetensors")).items()})
    m.set_num_codebooks(8)
    return m.eval()


def voice_clip(path: Path) -> None:
    """A speech-like mono 24 kHz int16 WAV whose length is no whole number of frames."""
    rng = np.random.default_rng(SEED)
    t = np.arange(int(VOICE_SECONDS * 24000)) / 24000.0
    f0 = 140 + 50 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 24000.0
    x = (
        0.2 * np.sin(phase)
        + 0.1 * np.sin(3 * phase)
        + 0.03 * rng.standard_normal(t.shape) * (np.sin(2 * np.pi * 3 * t) > 0)
    )
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(24000)
        w.writeframes(pcm.tobytes())


def run(lm, mimi, voice: Path, prompt: list[int], user: np.ndarray, save: bool) -> np.ndarray:
    """Every `step` output ([text, 8 agent codebooks] per frame, -1 where None), prompts first."""
    gen = LMGen(
        lm,
        device="cpu",
        use_sampling=False,
        audio_silence_frame_cnt=int(0.5 * 12.5),
        sample_rate=24000,
        frame_rate=12.5,
        save_voice_prompt_embeddings=save,
    )
    outs: list[np.ndarray] = []
    step = gen.step

    def recording(*a, **k):
        out = step(*a, **k)
        tok = out[0] if isinstance(out, tuple) else out
        outs.append(np.full(9, -1) if tok is None else tok[0, :9, 0].numpy().copy())
        return out

    gen.step = recording
    if voice.suffix == ".pt":
        gen.load_voice_prompt_embeddings(str(voice))
    else:
        gen.load_voice_prompt(str(voice))
    gen.text_prompt_tokens = prompt
    mimi.streaming_forever(1)
    gen.streaming_forever(1)
    mimi.reset_streaming()
    gen.reset_streaming()
    with torch.no_grad():
        gen.step_system_prompts(mimi)
        mimi.reset_streaming()
        for u in user:
            gen.step(torch.from_numpy(u)[None, :, None])
    return np.stack(outs)


def loudness_signals() -> list[tuple[np.ndarray, int]]:
    """Signals whose pyloudnorm loudness the tests compare with ours (regenerated there)."""
    rng = np.random.default_rng(SEED)
    out = []
    for n, rate in ((36000, 24000), (240000, 24000), (44100 * 3 + 17, 44100), (9601, 16000)):
        x = rng.standard_normal(n) * np.linspace(0.01, 0.5, n) * (np.sin(np.arange(n) / 3000) > -0.3)
        out.append((x, rate))
    return out


def loudness() -> None:
    import pyloudnorm

    lufs = [pyloudnorm.Meter(rate).integrated_loudness(x) for x, rate in loudness_signals()]
    np.savez_compressed(OUT / "loudness.npz", lufs=np.array(lufs))
    print("pyloudnorm", pyloudnorm.__version__ if hasattr(pyloudnorm, "__version__") else "", lufs)


def main() -> None:
    torch.manual_seed(0)
    cfg = LmConfig.from_dict(NARROW)
    state = random_state(cfg, SEED)
    assert set(state) == set(pytorch_layout(cfg)) and len(state) == 475, len(state)
    lm, mimi = reference_lm(state), reference_mimi()
    rng = np.random.default_rng(100 + SEED)
    prompt = [int(t) for t in rng.integers(4, cfg.text_card, 12)]
    user = rng.integers(0, cfg.card, (CONVERSATION, 8)).astype(np.int64)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "voice.wav"
        voice_clip(wav)
        shutil.copy(wav, OUT / "voice.wav")
        from_wav = run(lm, mimi, wav, prompt, user, save=True)  # also writes voice.pt
        saved = torch.load(Path(tmp) / "voice.pt")
        torch.save(saved, OUT / "voice.pt")
        # a preset as published (bf16 embeddings): for the reader only
        torch.save(
            {"embeddings": saved["embeddings"].to(torch.bfloat16), "cache": saved["cache"]}, OUT / "voice_bf16.pt"
        )
        from_pt = run(lm, mimi, OUT / "voice.pt", prompt, user, save=False)
    np.savez_compressed(
        OUT / "personaplex_narrow.npz",
        config=np.array(json.dumps(NARROW)),
        seed=np.array(SEED),
        prompt=np.array(prompt),
        user=user,
        from_wav=from_wav,
        from_pt=from_pt,
        embeddings=saved["embeddings"].float().numpy()[:, 0, 0],
        cache=saved["cache"].numpy(),
    )
    same = int((from_wav[-CONVERSATION:] == from_pt[-CONVERSATION:]).all(axis=1).sum())
    print(
        f"{len(from_wav)} steps, wav vs pt conversation frames identical: {same} of {CONVERSATION}; prompt steps "
        f"{len(from_wav) - CONVERSATION}; text[-20:] {from_wav[-20:, 0].tolist()}"
    )
    for p in sorted(OUT.iterdir()):
        print(p.name, p.stat().st_size)


if __name__ == "__main__":
    os.environ.setdefault("NO_TORCH_COMPILE", "1")
    if sys.argv[1:] != ["loudness"]:
        main()
    loudness()
