"""runtime/ errors name the Python API's parameters (`mimi_backend="mlx"`, `n_q=3`, `force=True`):
a script calls runtime/ as well as the tools do. The tools print the same errors with the flag
that gives each parameter (cli/flag_words.py, applied by cli/runner.py to every error line)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf

import moshi_mlx
from moshi_mlx.cli.flag_words import FLAG_FOR, in_flag_words
from moshi_mlx.errors import Error
from moshi_mlx.models import mimi_rust

FLAG = re.compile(r"(?<![\w-])(--[a-z]|-q\b)")  # a CLI flag, as the old messages wrote them


def _api_error(call) -> str:
    with pytest.raises(Error) as e:
        call()
    msg = str(e.value)
    assert not FLAG.search(msg), f"a runtime error names a CLI flag: {msg}"
    return msg


def test_runtime_errors_name_the_api_parameters(tmp_path, monkeypatch):
    from moshi_mlx.runtime import tts as rtts
    from moshi_mlx.runtime.echo import EchoCanceller
    from moshi_mlx.runtime.subtitles import check_output_path
    from moshi_mlx.runtime.textgen import parse_prompt
    from moshi_mlx.runtime.transcript import PlaceholderTokenizer

    # rustymimi need not be installed: the refusal is about the demo codec, said after that check
    monkeypatch.setattr(mimi_rust, "require_rustymimi", lambda: None)
    msg = _api_error(lambda: moshi_mlx.load("random-tiny", mimi_backend="rustymimi"))
    assert msg.endswith('use mimi_backend="auto" or mimi_backend="mlx"'), msg
    msg = _api_error(lambda: rtts.load_tts_session(model="tts-tiny", mimi_backend="rustymimi"))
    assert 'mimi_weight="random"' in msg and msg.endswith('use mimi_backend="auto" or mimi_backend="mlx"'), msg
    assert _api_error(lambda: rtts.load_tts_session(model="tts-tiny", quantize=3)) == (
        "quantize must be 4, 8 or None (as stored), got 3"
    )
    assert _api_error(lambda: rtts.load_tts_session(model="tts-tiny", n_q=99)) == (
        "n_q=99 is out of range: this model has 4 audio codebooks (1 to 4)"
    )
    msg = _api_error(lambda: parse_prompt("hello", PlaceholderTokenizer()))
    assert 'tokenizer="none"' in msg, msg
    (tmp_path / "t.json").write_text("{}")
    assert _api_error(lambda: check_output_path(tmp_path / "t.json")).endswith("(force=True replaces it)")
    assert _api_error(lambda: EchoCanceller(canceller="nlms")) == "canceller must be one of linear, aec3, got 'nlms'"
    assert _api_error(lambda: EchoCanceller(noise_suppression=True)).endswith('they need canceller="aec3"')
    ids_only = moshi_mlx.load("random-tiny-persona", tokenizer="none", codec=False)
    assert _api_error(lambda: ids_only.generator(persona="You are a pirate.")) == (
        'a persona needs the model\'s text tokenizer; tokenizer="none" (token ids only) has none'
    )


def test_more_runtime_and_model_errors_name_the_api_parameters(monkeypatch):
    """Three that still wrote a flag a script has not got: resolve_mode ('--echo-cancel must be
    one of ...'), TtsGen's cfg_coef ('this model takes --cfg-coef in ...') and rustymimi not
    installed ('--mimi-backend rustymimi: ... or use --mimi-backend auto/mlx')."""
    from moshi_mlx.models import random_lm
    from moshi_mlx.models.tts import TtsGen, TtsSettings
    from moshi_mlx.runtime.echo import resolve_mode

    assert _api_error(lambda: resolve_mode("maybe")) == "mode must be one of auto, on, off, got 'maybe'"
    lm = random_lm("tts-tiny", seed=1)
    voice = np.zeros((32, 5), np.float32)
    settings = TtsSettings.from_config(lm.cfg, 12.5)
    msg = _api_error(lambda: TtsGen(lm, settings, [voice], cfg_coef=2.2))
    assert msg.startswith("cfg_coef=2.2 is not one this model takes: 1.0, 1.5"), msg
    assert in_flag_words(msg).startswith("--cfg-coef 2.2 is not one this model takes: 1.0, 1.5")
    monkeypatch.setattr(mimi_rust, "rustymimi_available", lambda: False)
    msg = _api_error(lambda: moshi_mlx.load("random-tiny", mimi_backend="rustymimi"))
    assert msg.startswith('mimi_backend="rustymimi": the rustymimi package is not installed'), msg
    assert in_flag_words(msg) == (
        "--mimi-backend rustymimi: the rustymimi package is not installed (pip install rustymimi; "
        "or use --mimi-backend auto or --mimi-backend mlx)"
    )


def test_the_tools_print_them_with_their_flags(tmp_path, capsys):
    from moshi_mlx.cli import helium, run_inference, stt, tts

    t = np.arange(24000) / 24000
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)
    (tmp_path / "t.json").write_text("{}")
    runs = (
        (
            stt.main,
            [str(tmp_path / "in.wav"), "--model", "random-tiny-stt", "--transcript", str(tmp_path / "t.json")],
            f"error: {tmp_path / 't.json'} already exists (--force replaces it)",
        ),
        (
            tts.main,
            ["hi", str(tmp_path / "o.wav"), "--model", "tts-tiny", "--voice", "random", "--n-q", "99"],
            "error: --n-q 99 is out of range: this model has 4 audio codebooks (1 to 4)",
        ),
        (
            helium.main,
            ["hello", "--model", "random-tiny-helium", "--tokenizer", "none"],
            "error: this model has no text tokenizer (--tokenizer none or a demo model): give the prompt as token "
            'ids, e.g. "12 7 99"',
        ),
    )
    for main, argv, line in runs:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == line and sum(x.startswith("error:") for x in err) == 1, err
    if mimi_rust.rustymimi_available():  # else the refusal is 'not installed' (test_conventions)
        assert run_inference.main([str(tmp_path / "in.wav"), "--model", "random-tiny", "--mimi-backend", "rustymimi"])
        assert capsys.readouterr().err.strip().endswith("use --mimi-backend auto or --mimi-backend mlx")
    assert not (tmp_path / "o.wav").exists() and (tmp_path / "t.json").read_text() == "{}"


def test_quantized_is_the_api_word_and_the_tools_say_q(tmp_path, capsys):
    """weights/resolve.py's refusal of quantized=8 on q4 weights: a script reads `quantized=8`
    (it said `drop -q`, a flag no script has), a tool `-q 8`."""
    from moshi_mlx.cli import convert, run_inference

    folder = tmp_path / "q4"
    assert convert.main(["--model", "random-tiny", "--out", str(folder), "-q", "4", "--quiet"]) == 0
    msg = _api_error(lambda: moshi_mlx.load(str(folder), quantized=8))
    assert msg.endswith("holds q4 weights, not q8: drop quantized=8 to load it as it is, or pass the q8 file"), msg
    t = np.arange(2400) / 24000
    sf.write(tmp_path / "in.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)
    argv = [str(tmp_path / "in.wav"), str(tmp_path / "out.wav"), "--hf-repo", str(folder), "-q", "8"]
    assert run_inference.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("holds q4 weights, not q8: drop -q 8 to load it as it is, or pass the q8 file"), err
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize(
    "api, cli",
    [
        ('use mimi_backend="auto" or mimi_backend="mlx"', "use --mimi-backend auto or --mimi-backend mlx"),
        ('a random Mimi (mimi="random")', "a random Mimi (--mimi-weight random)"),
        ("drop quantize=8", "drop -q 8"),
        ("cfg_coef=-1.0 is not one", "--cfg-coef -1.0 is not one"),  # a negative value whole
        ("(force=True replaces it)", "(--force replaces it)"),
        # load()'s `quantized` (weights/resolve.py), its default None too
        ("(model.q4.safetensors is in the cache: quantized=4)", "(model.q4.safetensors is in the cache: -q 4)"),
        ("(model.safetensors is in the cache: quantized=None)", "(model.safetensors is in the cache: without -q)"),
        ("not q8: drop quantized=8 to load it as it is", "not q8: drop -q 8 to load it as it is"),
        # not a parameter: a path or a longer name that ends in one
        ("/tmp/x.force=1 and my_n_q=3 and --n_q=2", None),
    ],
)
def test_in_flag_words(api, cli):
    assert in_flag_words(api) == (api if cli is None else cli)


def test_every_flag_is_one_the_tools_have():
    from tests.cli.test_conventions import ALL, _flags

    flags = {f for _, _, ap in ALL for f in _flags(ap)}
    assert set(FLAG_FOR.values()) <= flags
