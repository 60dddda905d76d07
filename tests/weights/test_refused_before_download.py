"""A tool given the wrong kind of model refuses it from its config.json (or the preset known for
the repo) before the weights are downloaded: a Hub repo not cached was downloaded in full
(GBs) by the resolver before `load(check=...)`, `listens=True`, moshi-stt's or moshi-tts's
refusal ran. The fake Hub (`hf_cache.fake_hub`) records every download asked of it."""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest
import soundfile as sf

import moshi_mlx
from moshi_mlx.errors import ConfigError, UsageError
from moshi_mlx.models.config import LmConfig, preset
from moshi_mlx.weights.random_state import random_state
from moshi_mlx.weights.resolve import resolve_model
from moshi_mlx.weights.safetensors_io import save_safetensors

from .hf_cache import fake_hub, header_only, mlx_layout  # noqa: F401  (fixture)


def _files(tmp_path, name: str, with_config: bool = True) -> dict:
    """Preset `name`'s tiny model as a repo's files: model.safetensors (random weights) and
    its config.json."""
    d = tmp_path / name
    d.mkdir()
    cfg = preset(name).to_dict()
    cfg.pop("_source", None)
    state = random_state(LmConfig.from_dict(cfg), 5)
    save_safetensors(d / "model.safetensors", {k: mx.array(v) for k, v in state.items()})
    (d / "config.json").write_text(json.dumps(cfg))
    return {n: d / n for n in ("model.safetensors", "config.json")[: 2 if with_config else 1]}


def test_moshi_stt_refuses_a_dialogue_repo_before_downloading_it(tmp_path, fake_hub, capsys):  # noqa: F811
    from moshi_mlx.cli import stt

    fake_hub["someone/dialogue"] = _files(tmp_path, "random-tiny")
    sf.write(tmp_path / "in.wav", np.zeros(1920, np.float32), 24000)
    assert stt.main([str(tmp_path / "in.wav"), "--hf-repo", "someone/dialogue"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "someone/dialogue is not a speech-to-text model" in err[0], err
    assert fake_hub.asked == [("someone/dialogue", "config.json")]


def test_load_refuses_a_text_model_for_listening_and_a_check_before_downloading(tmp_path, fake_hub):  # noqa: F811
    fake_hub["someone/text"] = _files(tmp_path, "random-tiny-helium")
    with pytest.raises(UsageError, match=r"^someone/text is a text model \(it takes no audio\)"):
        moshi_mlx.load("someone/text", listens=True)
    seen = []

    def refuse(cfg, name):
        seen.append((cfg.dim, name))
        raise UsageError(f"{name}: not wanted")

    with pytest.raises(UsageError, match="^someone/text: not wanted$"):
        moshi_mlx.load("someone/text", check=refuse)
    assert seen == [(preset("random-tiny-helium").dim, "someone/text")]
    # (online, each load asks for config.json: huggingface_hub checks that the cached copy is current)
    assert fake_hub.asked == [("someone/text", "config.json")] * 2


def test_moshi_tts_refuses_a_model_that_is_not_tts_before_downloading_it(tmp_path, fake_hub):  # noqa: F811
    from moshi_mlx.runtime.tts import load_tts_session

    fake_hub["someone/dialogue"] = _files(tmp_path, "random-tiny")
    with pytest.raises(ConfigError, match=r"^someone/dialogue: not a TTS model \(no tts_config\)"):
        load_tts_session(hf_repo="someone/dialogue", check=lambda cfg: pytest.fail("checked a model that is not TTS"))
    assert fake_hub.asked == [("someone/dialogue", "config.json")]


def test_a_known_repo_is_refused_from_its_preset_and_a_repo_without_config_after_its_header(
    tmp_path,
    fake_hub,  # noqa: F811
):
    """A known repo with no config.json (Kyutai's -mlx ones) is decided by its preset: refused
    before its weights are asked for. With neither, only the weights' header can say what the
    model is: the check runs once it is read, on the preset it fits."""
    repo = "kyutai/moshiko-mlx-q4"
    fake_hub[repo] = {
        "model.q4.safetensors": header_only(tmp_path / "q4.safetensors", mlx_layout(preset("moshiko"), 4, 32))
    }
    seen = []

    def refuse(cfg):
        seen.append(cfg.dim)
        raise UsageError("refused")

    with pytest.raises(UsageError, match="^refused$"):
        resolve_model(repo, quantized=4, check=refuse)
    assert fake_hub.asked == [(repo, "config.json")] and seen == [preset("moshiko").dim]
    fake_hub["someone/bare"] = _files(tmp_path, "random-tiny", with_config=False)
    with pytest.raises(UsageError, match="^refused$"):
        resolve_model("someone/bare", check=refuse)
    assert fake_hub.asked[1:] == [("someone/bare", "config.json"), ("someone/bare", "model.safetensors")]
    assert seen[1:] == [preset("random-tiny").dim]
    got = resolve_model("someone/bare", check=seen.append)  # a check that passes: the model resolves
    assert got.how == "preset random-tiny (matched by tensor shapes)" and seen[-1] is got.cfg


@pytest.mark.parametrize("tool", ["local", "run_inference", "web", "api"])
def test_a_tts_model_is_said_to_be_one_and_refused_before_downloading(tool, tmp_path, fake_hub, capsys):  # noqa: F811
    """Kyutai's TTS given to a tool that listens was 'a text model (it takes no audio) ... use
    moshi-helium or Model.text_stream()' (moshi-local), or moshi-run-inference downloaded it in
    full and then said 'a conversation needs a model that listens ... (a text model: use
    text_stream())'. It is a text-to-speech model: moshi-tts speaks with it; said from its
    config, before the weights are downloaded."""
    from moshi_mlx.cli import local, local_web, run_inference

    fake_hub["kyutai/some-tts"] = _files(tmp_path, "tts-tiny")
    sf.write(tmp_path / "in.wav", np.zeros(1920, np.float32), 24000)
    repo = ["--hf-repo", "kyutai/some-tts"]
    if tool == "api":
        with pytest.raises(UsageError) as e:
            moshi_mlx.load("kyutai/some-tts", listens=True)
        err = str(e.value)
    else:
        main = {"local": local.main, "run_inference": run_inference.main, "web": local_web.main}[tool]
        argv = {"local": ["--simulate", str(tmp_path / "in.wav")], "run_inference": [str(tmp_path / "in.wav")]}
        assert main([*argv.get(tool, ["--port", "0"]), *repo]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
    assert "kyutai/some-tts is a text-to-speech model" in err and "moshi-tts" in err and "text model" not in err, err
    assert fake_hub.asked == [("kyutai/some-tts", "config.json")]


def test_a_conversation_with_a_tts_model_says_what_it_is():
    """Model.respond / conversation on a TTS model said '(a text model: use text_stream())'."""
    model = moshi_mlx.load("random-tiny")
    model.cfg = preset("tts-tiny")  # the config is all the check reads
    with pytest.raises(
        UsageError, match=r"takes no audio \(a text-to-speech model: use runtime\.tts\.synthesize\(\)\)$"
    ):
        model.respond(np.zeros(1920, np.float32), sample_rate=24000)


def test_the_default_repo_is_named_in_a_refusal(fake_hub, capsys):  # noqa: F811
    """`moshi-local -q 4 --voice NATF2` said 'this model is a dialogue model (moshi)': the repo
    -q 4 picks is named, as an explicit --hf-repo is."""
    from moshi_mlx.cli import local

    assert local.main(["-q", "4", "--voice", "NATF2", "--simulate"]) == 2
    assert capsys.readouterr().err == (
        "error: --voice needs a PersonaPlex model (--hf-repo nvidia/personaplex-7b-v1); "
        "kyutai/moshiko-mlx-q4 is a dialogue model (moshi)\n"
    )
    assert fake_hub.asked == [("kyutai/moshiko-mlx-q4", "config.json")]  # refused before its weights
