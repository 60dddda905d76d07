"""The public API: `moshi_mlx.load`, `Model.conversation` / `respond`, and the example that
the README shows (run here on the offline demo model)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import moshi_mlx
from moshi_mlx import AudioError, UsageError

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "runtime" / "run_inference_random_tiny.json"


def _sine(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return moshi_mlx.load("random-tiny", seed=7)


def test_example_script_runs(tmp_path):
    out = tmp_path / "reply.wav"
    r = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "talk.py"), "random-tiny", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    audio, rate = sf.read(out, dtype="float32")
    hello = sf.info(moshi_mlx.demo_clip())
    assert rate == hello.samplerate and abs(len(audio) - hello.frames) <= 1920  # as long as the input, to a frame
    assert np.abs(audio).max() > 0  # audio arrived
    # and text, through the demo model's tiny tokenizer: no placeholder ids (its pieces, learnt from the
    # docs, include the character ‹ itself, which some seeds sample)
    assert len(r.stdout.strip()) > 10 and not re.search(r"‹\d+›", r.stdout)


def test_import_stays_light():
    code = "import sys, moshi_mlx; print(sorted(m for m in ('mlx', 'numpy', 'huggingface_hub') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_respond_is_the_pipeline_run_inference_pinned(model):
    """Same seed, same input as the run_inference fixture: the same tokens."""
    res = model.respond(_sine(24000, 3.0), sample_rate=24000, seed=7, temp=0.8)
    expected = json.loads(FIXTURE.read_text())
    assert [t for _, t, _ in res.tokens] == expected["text"]
    assert [a if a is not None else [-1, -1] for _, _, a in res.tokens] == expected["audio"]
    assert len(res.audio) == 38 * 1920 and res.text


@pytest.mark.parametrize("chunk", [1, 777, 1920, 24000])
def test_chunking_does_not_change_the_answer(model, chunk):
    pcm = _sine(24000, 1.5)
    ref = model.respond(pcm, sample_rate=24000, seed=1)
    conv = model.conversation(seed=1, keep_tokens=True)
    out = conv.feed(pcm[:0])
    for i in range(0, len(pcm), chunk):
        out += conv.feed(pcm[i : i + chunk])
    out += conv.close()
    assert conv.tokens == ref.tokens
    np.testing.assert_array_equal(out.audio, ref.audio)
    assert out.text.split() == ref.text.split()


def test_feed_returns_the_answer_so_far_at_the_callers_rate(model):
    rate = 16000
    pcm = _sine(rate, 2.0)
    with model.conversation(sample_rate=rate) as conv:
        first = conv.feed(pcm[:rate])  # 1 s in: its answers come back before feed returns
        assert len(first.audio) > 0 and first.pieces
        starts = [p.start for p in first.pieces]
        assert starts == sorted(starts) and starts[0] >= 0.08  # the end of the frame that produced it
        assert all(abs(s / 0.08 - round(s / 0.08)) < 1e-6 for s in starts)
        rest = conv.feed(pcm[rate:]) + conv.close()
    total = len(first.audio) + len(rest.audio)
    assert abs(total - len(pcm)) <= rate * 0.08  # the model's voice as long as the input, to a frame
    assert first.audio.dtype == np.float32


def test_real_time_mode_does_not_wait(model):
    pcm = _sine(24000, 1.0)
    with model.conversation(max_lag_ms=10_000) as conv:
        out = conv.feed(pcm)  # returns at once: whatever is ready (maybe nothing yet)
        out += conv.close()
    assert len(out.audio) > 0 and out.pieces


def test_caller_mistakes_are_usage_and_audio_errors(model):
    with pytest.raises(UsageError, match="sample_rate"):
        model.conversation(sample_rate=0)
    with pytest.raises(UsageError, match="unknown sampling option"):
        model.conversation(temperature=0.5)
    conv = model.conversation()
    with pytest.raises(UsageError, match="already has an open conversation"):
        model.conversation()
    with pytest.raises(AudioError, match="NaN"):
        conv.feed(np.array([0.0, np.nan], np.float32))
    with pytest.raises(AudioError, match="not PCM"):  # int16/int32 PCM is scaled (issue 11); int64 is no PCM
        conv.feed(np.zeros(100, np.int64))
    with pytest.raises(AudioError, match="shape"):
        conv.feed(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(AudioError, match=r"2 samples of 1920 channels.*\.T"):  # [channels, samples] by mistake
        conv.feed(np.zeros((2, 1920), np.float32))
    conv.feed(np.zeros((1920, 2), np.float32))  # [samples, channels] is mixed down
    conv.feed(np.zeros((1, 2), np.float32))  # one stereo sample is still audio
    conv.close()
    with pytest.raises(UsageError, match="closed"):
        conv.feed(np.zeros(10, np.float32))
    with pytest.raises(UsageError, match="mimi_backend"):
        moshi_mlx.load("random-tiny", mimi_backend="torch")
    with pytest.raises(UsageError, match="quantized"):
        moshi_mlx.load(quantized=3)
    with pytest.raises(UsageError, match="sample_rate="):
        model.respond(np.zeros(100, np.float32))


def test_more_caller_mistakes_are_one_line_errors(model, tmp_path):
    """Each was a TypeError/ValueError from Python, numpy or inside MLX, or silently did
    something else (an empty source loaded the one .safetensors file in the working folder)."""
    import mlx.core as mx

    for rate in (0, float("nan"), 16000.0, "24000"):
        with pytest.raises(UsageError, match="sample_rate must be a positive integer"):
            model.respond(np.zeros(2400, np.float32), sample_rate=rate)
    with pytest.raises(UsageError, match="progress must be a function"):
        model.respond(np.zeros(2400, np.float32), sample_rate=24000, progress=5)
    with pytest.raises(UsageError, match="max_lag_ms must be a number"):
        model.conversation(max_lag_ms="400")
    for source in (123, b"random-tiny", ["random-tiny"]):
        with pytest.raises(UsageError, match="source must be"):
            moshi_mlx.load(source)
    (tmp_path / "stray.safetensors").write_bytes(b"x" * 16)
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for source in ("", "  "):
            with pytest.raises(UsageError, match="source is empty"):
                moshi_mlx.load(source)
    finally:
        os.chdir(cwd)
    with pytest.raises(UsageError, match="dtype must be one of"):
        moshi_mlx.load("random-tiny", dtype=np.float32)
    assert moshi_mlx.load("random-tiny", dtype=mx.float16, codec=False).lm is not None
    for kw in (
        dict(quantized=4),  # (-q 4 with --model: silently unquantized before)
        dict(weights="w.safetensors"),
        dict(config="moshiko"),
        dict(mimi="m.safetensors"),
        dict(tokenizer="t.model"),
    ):
        with pytest.raises(UsageError, match="random-tiny is built in memory: it takes no"):
            moshi_mlx.load("random-tiny", **kw)
    assert moshi_mlx.load("random-tiny", mimi="random", tokenizer="none").is_demo  # what it uses anyway


def test_pipeline_checks_rates_and_lag(model):
    for kw, match in [
        (dict(input_rate=0), "input_rate must be a positive integer"),
        (dict(output_rate=16000.5), "output_rate must be a positive integer"),
        (dict(max_lag_ms=-1), "max_lag_ms must be > 0"),
        (dict(max_lag_ms="x"), "max_lag_ms"),
    ]:
        with pytest.raises(UsageError, match=match):
            model.pipeline(**kw)


def test_a_conversation_left_open_does_not_abort_the_interpreter():
    """Workers still inside MLX at interpreter shutdown aborted the process ("terminate
    called without an active exception", SIGABRT, 12 runs in 12 here); they are stopped at exit."""
    script = (
        "import numpy as np, moshi_mlx\n"
        "m = moshi_mlx.load('random-tiny')\n"
        "c = m.conversation(); c.feed(np.zeros(4000, np.float32)); c.close()\n"
        "m.conversation().feed(np.zeros(10, np.float32))\n"
    )  # the second one is left open
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "terminate called" not in r.stderr, r.stderr


def test_load_a_converted_folder_prepared_by_default(tmp_path, monkeypatch):
    import mlx.core as mx

    from moshi_mlx.cli.convert import run as convert
    from moshi_mlx.models import load_lm

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    out = tmp_path / "tiny-q4"
    assert convert(["--model", "random-tiny", "--out", str(out), "-q", "--quiet"]) == 0
    m = moshi_mlx.load(out, mimi="random", tokenizer="none", offline=True)
    assert m.compute is not None and not hasattr(m.lm, "compute_format")  # the format travels beside the LM
    if m.compute.device.startswith("Device(cpu"):
        assert m.compute.activation_dtype == "float32"  # quantized weights compute in fp32 on a CPU
        assert m.generator().dtype == mx.float32 and m.compute.activation == mx.float32
    from moshi_mlx.models.backend import prepare_lm

    # the low-level loader gives the parameters as stored; prepare_lm gives the same format load() chose
    assert m.compute.describe() == prepare_lm(load_lm(out)).describe()
    assert moshi_mlx.load(out, mimi="random", tokenizer="none", offline=True, compute="stored").compute is None
    with pytest.raises(UsageError, match="compute"):
        moshi_mlx.load(out, mimi="random", tokenizer="none", offline=True, compute="fast")


def test_offline_names_the_default_repo(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(moshi_mlx.WeightsError, match="moshiko-mlx-q4 is not in the local Hugging Face cache"):
        moshi_mlx.load(quantized=4, offline=True)
    with pytest.raises(moshi_mlx.WeightsError, match="moshika-mlx-q8"):
        moshi_mlx.load("moshika", quantized=8, offline=True)  # a preset name: its repo
    with pytest.raises(UsageError, match="no q4 weights on the Hub"):
        moshi_mlx.load("hibiki-2b", quantized=4, offline=True)


def test_cli_flags_become_load_keywords():
    import argparse

    from moshi_mlx.constants import DEFAULT_SEED
    from moshi_mlx.models.sampling import SamplingOptions
    from moshi_mlx.cli.model_args import add_model_args, add_sampling_args, load_kwargs, sampling_options

    ap = argparse.ArgumentParser()
    add_model_args(ap)
    add_sampling_args(ap)
    args = ap.parse_args(
        [
            "--hf-repo",
            "me/model",
            "-q",
            "8",
            "--mimi-weight",
            "random",
            "--dtype",
            "float32",
            "--temp",
            "0.5",
            "--offline",
        ]
    )
    kw = load_kwargs(args)
    assert kw["source"] == "me/model" and kw["quantized"] == 8 and kw["mimi"] == "random"
    assert kw["dtype"] == "float32" and kw["offline"] is True
    # --temp is the text's temperature too unless --temp-text says otherwise (upstream's run_inference
    # --temp; the API's temp= is the audio's alone)
    assert sampling_options(args) == SamplingOptions(temp=0.5, temp_text=0.5)
    assert sampling_options(args).seed == DEFAULT_SEED
    assert sampling_options(ap.parse_args(["--temp", "0", "--temp-text", "0.9"])) == SamplingOptions(
        temp=0.0, temp_text=0.9
    )
    assert sampling_options(ap.parse_args(["--temp-text", "0.9"])) == SamplingOptions(temp_text=0.9)
    assert sampling_options(ap.parse_args([])) == SamplingOptions()
    assert kw["seed"] == DEFAULT_SEED  # the demo weights' seed too
    assert f"(default {DEFAULT_SEED})" in " ".join(ap.format_help().split())  # shown in --help


def test_a_command_and_a_script_sample_the_same_by_default():
    """One default seed: the CLIs' flags and `moshi_mlx.load()` + `generator()` build the
    same demo weights and draw the same tokens (the CLIs used 299792458, the API 0)."""
    import argparse

    from moshi_mlx.cli.model_args import add_model_args, add_sampling_args, load_session, sampling_options

    ap = argparse.ArgumentParser()
    add_model_args(ap)
    add_sampling_args(ap)
    args = ap.parse_args(["--model", "random-tiny"])
    cli = load_session(args, with_codec=False)
    api = moshi_mlx.load("random-tiny", codec=False)

    def tokens(gen):
        return [gen.step([i % 7] * gen.cfg.user_q) for i in range(4)]

    assert tokens(cli.generator(sampling_options(args))) == tokens(api.generator())
    assert tokens(api.generator()) == tokens(moshi_mlx.models.LmGen(api.lm))  # LmGen's own default too


def test_a_text_model_refuses_audio_in():
    """Helium takes no audio: a conversation with it dropped everything fed to it."""
    helium = moshi_mlx.load("random-tiny-helium", tokenizer="none")
    assert helium.cfg.user_q == 0
    for call in (
        lambda: helium.conversation(),
        lambda: helium.respond(_sine(24000, 1.0), sample_rate=24000),
        lambda: helium.pipeline(),
        lambda: helium.transcriber(),
    ):
        with pytest.raises(moshi_mlx.UsageError, match="takes no audio"):
            call()
    assert list(helium.text_stream(seed=0).stream("12 7 99", max_tokens=2))  # its own use still works


def test_interrupted_respond_keeps_the_audio_of_every_frame_answered(tmp_path):
    """A decoder far behind the LM (as on a CPU with the real Mimi): on Ctrl-C the WAV held the
    frames decoded so far only (6 of 134 answered); the rest are decoded on the way out."""
    import time as _time

    model = moshi_mlx.load("random-tiny")
    decode = model.codec.decode_step

    def slow_decode(codes):
        _time.sleep(0.03)
        return decode(codes)

    model.codec.decode_step = slow_decode

    def progress(done, total):
        if done >= 40:
            raise KeyboardInterrupt

    out = tmp_path / "o.wav"
    with pytest.raises(KeyboardInterrupt) as e:
        model.respond(_sine(24000, 20.0), out, sample_rate=24000, progress=progress)
    res = e.value.partial
    answered = sum(1 for _, _, a in res.tokens if a is not None)
    assert res.partial and answered >= 40
    assert sf.info(str(out)).frames == len(res.audio) == answered * 1920


def test_the_api_refuses_a_persona_in_api_words():
    """generator(persona=...) on a Moshi model names moshi_mlx.load("nvidia/personaplex-7b-v1"),
    not the CLI's --hf-repo (the CLIs say it with their flags, before the weights load)."""
    import moshi_mlx
    from moshi_mlx.errors import UsageError

    with pytest.raises(UsageError) as e:
        moshi_mlx.load("random-tiny").generator(persona="You are a pirate.")
    msg = str(e.value)
    assert 'a persona needs a PersonaPlex model (e.g. moshi_mlx.load("nvidia/personaplex-7b-v1"))' in msg, msg
    assert "--" not in msg and "a dialogue model" in msg, msg


def test_a_tts_model_given_to_load_names_the_call_that_loads_it(tmp_path, monkeypatch):
    """load("tts-tiny") said "preset 'tts-tiny' has no bf16 weights on the Hub (published:
    none)", and a TTS repo or folder was loaded in full as a `Model` that could only make
    noise; each is now one line naming `load_tts_session` with the same source, said from
    the config, before the weights are read. The call it names works."""
    from moshi_mlx.models import LmConfig, lm_preset
    from moshi_mlx.runtime.tts import load_tts_session
    from moshi_mlx.weights import lm_loader
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    with pytest.raises(UsageError) as e:
        moshi_mlx.load("tts-tiny")
    assert str(e.value) == (
        "tts-tiny is the text-to-speech demo model: load it with "
        'moshi_mlx.runtime.tts.load_tts_session(model="tts-tiny") (on the command line: moshi-tts)'
    )
    assert load_tts_session(model="tts-tiny").is_demo
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = lm_preset("tts-tiny").to_dict()
    d.update(card=2048)
    folder = tmp_path / "my-tts"
    write_random_checkpoint(LmConfig.from_dict(d), folder, seed=4, dtype="bfloat16")

    def no_weights(*a, **k):
        raise AssertionError("the weights were read")

    monkeypatch.setattr(lm_loader, "load_resolved", no_weights)
    with pytest.raises(UsageError, match=re.escape(f'load_tts_session(hf_repo="{folder}")')) as e:
        moshi_mlx.load(str(folder))
    assert str(e.value).startswith(f"{folder} is a text-to-speech model: load it with moshi_mlx.runtime.tts.")
