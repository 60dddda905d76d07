"""moshi-translate: a file to a translated WAV and timestamped transcript, the live loop with
its end-of-turn policy (--simulate), and its refusals, with the demo translation model."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import moshi_mlx
from moshi_mlx.cli import translate
from moshi_mlx.errors import UsageError
from moshi_mlx.models.config import preset


def _speech_then_pause(path, speech_s=1.0, pause_s=2.5):
    rng = np.random.default_rng(0)
    x = np.concatenate([0.2 * rng.standard_normal(int(24000 * speech_s)), np.zeros(int(24000 * pause_s))])
    sf.write(path, x.astype(np.float32), 24000)


def test_file_to_wav_and_transcript(tmp_path, capsys):
    _speech_then_pause(tmp_path / "fr.wav")
    out, tr = tmp_path / "en.wav", tmp_path / "en.json"
    assert (
        translate.main(
            [
                str(tmp_path / "fr.wav"),
                str(out),
                "--transcript",
                str(tr),
                "--model",
                "random-tiny-hibiki-zero",
                "--quiet",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "x real time" in err
    audio, rate = sf.read(out)
    assert rate == 24000 and len(audio) % 1920 == 0 and len(audio) > 0
    words = json.loads(tr.read_text())["words"]
    assert all(w["start"] <= len(audio) / 24000 for w in words)


def test_live_simulated_pause_ends_the_turn(tmp_path, capsys):
    _speech_then_pause(tmp_path / "mic.wav")
    assert (
        translate.main(
            [
                "--model",
                "random-tiny-hibiki-zero",
                "--simulate",
                str(tmp_path / "mic.wav"),
                "--end-silence",
                "0.5",
                "--echo-cancel",
                "off",
                "--max-lag-ms",
                "off",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "1 turns ended" in err, err


def test_refusals(tmp_path, capsys):
    _speech_then_pause(tmp_path / "fr.wav")
    assert (
        translate.main(
            ["--model", "random-tiny-hibiki-zero", str(tmp_path / "fr.wav"), "--simulate", str(tmp_path / "fr.wav")]
        )
        == 2
    )
    assert "--simulate is for the live mode" in capsys.readouterr().err
    # a flag of the other mode was silently ignored: no tokens written, no pause policy
    fr, out = str(tmp_path / "fr.wav"), str(tmp_path / "en.wav")
    for argv, flag in (
        ([fr, out, "--end-silence", "2"], "--end-silence is for the live mode (leave out INFILE)"),
        ([fr, out, "--echo-cancel", "off"], "--echo-cancel is for the live mode"),
        ([fr, out, "--max-lag-ms", "off"], "--max-lag-ms is for the live mode"),
        (["--simulate", fr, "--save-tokens", str(tmp_path / "t.npz")], "--save-tokens is for translating a file"),
        (["--simulate", fr, "--quiet"], "--quiet is for translating a file (give INFILE)"),
    ):
        assert translate.main(["--model", "random-tiny-hibiki-zero", *argv]) == 2
        assert flag in capsys.readouterr().err
    assert not (tmp_path / "en.wav").exists() and not (tmp_path / "t.npz").exists()
    # the defaults given explicitly are not refused
    assert (
        translate._given(
            translate.parser().parse_args([fr, "--max-lag-ms", "400", "--end-silence", "1.5"]), translate.LIVE_ONLY
        )
        == []
    )
    with pytest.raises(UsageError, match="random-tiny is not a translation model"):
        translate._check_translates(preset("random-tiny"), "random-tiny")


def test_every_flag_of_the_live_loop_is_refused_with_a_file():
    """moshi-local's live flags, which moshi-translate shares, are refused with INFILE (where
    they do nothing) unless the file mode has them too: a live flag added to moshi-local is
    not silently ignored here (--steps was)."""
    import argparse

    from moshi_mlx.cli import local

    ap = argparse.ArgumentParser()
    local.add_live_args(ap)
    live = {a.option_strings[0] for a in ap._actions if a.option_strings and a.dest != "help"}
    assert live - set(translate.LIVE_ONLY) == {"--transcript", "--force", "--list-devices"}


def test_not_a_translation_model_is_refused_before_its_weights_are_read(tmp_path, capsys, monkeypatch):
    """A Moshi folder given to moshi-translate (file and live mode): one line from its config,
    before any weight is read (a 7B: minutes), naming what it is, the tool that runs it and a
    translation model to give instead. Before: refused after the load, the line starting with
    the model's description."""
    import mlx.core as mx

    from moshi_mlx.models import LmConfig
    from moshi_mlx.weights import lm_loader
    from moshi_mlx.weights.random_state import random_state
    from moshi_mlx.weights.safetensors_io import save_safetensors

    def no_weights(*a, **k):
        raise AssertionError("the weights were read before the model was refused")

    monkeypatch.setattr(lm_loader, "load_resolved", no_weights)
    _speech_then_pause(tmp_path / "fr.wav")
    cfg_d = preset("random-tiny").to_dict()
    cfg_d.pop("_source", None)
    d = tmp_path / "moshi"
    d.mkdir()
    save_safetensors(
        d / "model.safetensors", {k: mx.array(v) for k, v in random_state(LmConfig.from_dict(cfg_d), 5).items()}
    )
    (d / "config.json").write_text(json.dumps(cfg_d))
    shutil.copy(Path(moshi_mlx.demo_clip()).parent / "demo_tokenizer.model", d / "tokenizer_spm_32k_3.model")
    model = ["--hf-repo", str(d), "--mimi-weight", "random"]
    for argv in ([str(tmp_path / "fr.wav"), str(tmp_path / "en.wav")], ["--simulate", str(tmp_path / "fr.wav")]):
        assert translate.main([*argv, *model]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {d} is not a translation model (a dialogue model"), err
        assert "moshi-local" in err[0] and "kyutai/hibiki-zero-3b-pytorch-bf16" in err[0], err
    assert not (tmp_path / "en.wav").exists()


def test_end_of_turn_defaults_are_silence_policys():
    """--end-silence / --end-threshold-db default to what SilencePolicy (and so the web page,
    which builds it with no arguments) uses: one value each, in runtime/translation.py."""
    from moshi_mlx.cli.translate import parser
    from moshi_mlx.runtime.translation import SilencePolicy

    ap, policy = parser(), SilencePolicy()
    assert ap.get_default("end_silence") == policy.silence_s
    assert ap.get_default("end_threshold_db") == policy.threshold_db


def test_echo_cancel_help_does_not_say_moshi():
    """In moshi-translate the voice heard back is the translation's: --echo-cancel's help names
    the model's own voice, not Moshi's."""
    action = next(a for a in translate.parser()._actions if "--echo-cancel" in a.option_strings)
    assert "Moshi" not in action.help and "the model's own voice" in action.help, action.help


def test_no_help_text_says_moshi():
    """moshi-translate runs Hibiki-Zero (or Hibiki): no help text, the echo flags it shares with
    moshi-local included (--echo-canceller, --record-mic), names Moshi as the model."""
    text = translate.parser().format_help()
    assert not re.search(r"\bMoshi\b", text), [line for line in text.splitlines() if "Moshi" in line]
