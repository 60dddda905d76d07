"""run_inference on model files in the published layouts: a Hibiki-shaped model with CFG
(which must change the output), and a speech-to-text model (dep_q = 0: transcript only)."""

import json

import mlx.core as mx
import numpy as np
import soundfile as sf

from moshi_mlx.cli.run_inference import main
from moshi_mlx.runtime.translation import TRANSLATION_TAIL_S
from moshi_mlx.models import LmConfig, random_lm
from moshi_mlx.weights.lm_loader import save_lm

from ..models.lm_fixtures import fixture_config

# the Hibiki-shaped config of the LM oracle fixtures (scripts/make_fixtures_lm.py), narrower still
HIBIKI_NARROW = dict(
    fixture_config("hibiki2b_narrow"),
    dim=64,
    text_card=500,
    depformer_dim=32,
    depformer_dim_feedforward=132,
    depformer_num_heads=2,
    depformer_num_layers=1,
)


def _tokenizer(path):
    import sentencepiece as spm

    corpus = path.parent / "corpus.txt"
    corpus.write_text("hello world this is a test of the speech model\n" * 40)
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=20, minloglevel=2
    )
    return path


def _model_dir(tmp_path, cfg_dict):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(cfg_dict))
    cfg = LmConfig.from_dict(dict(cfg_dict))
    save_lm(random_lm(cfg, seed=1, dtype=mx.float32), d / "model.safetensors")
    _tokenizer(d / "tok.model")
    return d


def _audio(path, seconds=1.0):
    t = np.arange(int(24000 * seconds)) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)


def _run(d, tmp_path, *extra):
    tok = tmp_path / f"tok{len(list(tmp_path.glob('tok*.npz')))}.npz"
    args = [
        str(tmp_path / "in.wav"),
        str(tmp_path / "out.wav"),
        "--lm-config",
        str(d / "config.json"),
        "--moshi-weight",
        str(d / "model.safetensors"),
        "--mimi-weight",
        "random",
        "--tokenizer",
        str(d / "tok.model"),
        "--save-tokens",
        str(tok),
        "--temp",
        "0",
        "--temp-text",
        "0",
        "--quiet",
        "--force",
        *extra,
    ]
    assert main(args) == 0
    return np.load(tok)


def test_hibiki_shaped_with_cfg(tmp_path):
    d = _model_dir(tmp_path, HIBIKI_NARROW)
    _audio(tmp_path / "in.wav")
    plain = _run(d, tmp_path)
    guided = _run(d, tmp_path, "--cfg-coef", "3")
    assert plain["audio"].shape[1] == 16
    out, sr = sf.read(tmp_path / "out.wav")
    # a translation model's answer (docs/translation.md): a warm-up frame, the source (1 s: 13
    # frames), the end-of-input frame, then silence until its EOS, at most TRANSLATION_TAIL_S, and
    # its own delay (2); random weights write no EOS, so the cut is after the last non-padding
    # text token, in whole frames
    tail = int(TRANSLATION_TAIL_S * 12.5)
    assert sr == 24000 and len(out) % 1920 == 0 and 15 * 1920 < len(out) <= (1 + 13 + 1 + tail + 2) * 1920
    # guidance really changes what is generated (upstream's MLX CFG was a no-op)
    assert any(not np.array_equal(plain[k], guided[k]) for k in ("text", "audio"))


def test_speech_to_text_writes_transcript_only(tmp_path, capsys):
    stt = dict(
        HIBIKI_NARROW,
        n_q=8,
        dep_q=0,
        delays=[0] * 9,
        conditioners={},
        fuser={},
        model_type="stt",
        stt_config={"audio_delay_seconds": 0.5, "audio_silence_prefix_seconds": 0.25},
    )
    for k in [k for k in stt if k.startswith("depformer")]:
        stt.pop(k)
    stt.pop("conditioners")
    stt.pop("fuser")
    d = _model_dir(tmp_path, stt)
    _audio(tmp_path / "in.wav")
    toks = _run(d, tmp_path, "--transcript", str(tmp_path / "t.json"))
    assert toks["audio"].shape[1] == 0
    # 1 s of audio + 0.25 s prefix + (0.5 + 1.0) s suffix of silence = 2.75 s -> 34 frames
    assert len(toks["text"]) == 34
    assert not (tmp_path / "out.wav").exists()
    assert "text only" in capsys.readouterr().err
    assert (tmp_path / "t.json").exists()
