"""`python -m moshi_mlx.helium`: text generation on the demo model (its tiny tokenizer, and token
ids with --tokenizer none), on a
Helium-shaped folder with a real SentencePiece tokenizer, a Moshi checkpoint's temporal
transformer as a text model, and bad inputs."""

import io
import json
import subprocess
import sys

import mlx.core as mx
import pytest

from moshi_mlx.cli import helium
from moshi_mlx.models import LmConfig, random_lm
from moshi_mlx.models.config import preset
from moshi_mlx.models.helium import TextGen
from moshi_mlx.models.sampling import Sampler
from moshi_mlx.weights.lm_loader import save_lm


def test_demo_model_token_ids_greedy_matches_textgen(capsys):
    assert (
        helium.main(
            [
                "--model",
                "random-tiny-helium",
                "5, 17 300",
                "-n",
                "12",
                "--temp",
                "0",
                "--seed",
                "4",
                "--tokenizer",
                "none",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.strip()
    assert out.startswith("5, 17 300 ‹")
    ids = [int(t.strip("‹›")) for t in out.split()[3:]]
    lm = random_lm(preset("random-tiny-helium"), seed=4)
    assert ids == list(TextGen(lm, Sampler(temp=0.0)).generate([5, 17, 300], 12))


def test_readme_example_runs_on_the_demo_model(capsys):
    """The demo models have a real (tiny) SentencePiece tokenizer: README's text prompt runs offline
    as written (it was 'give the prompt as token ids')."""
    assert helium.main(["Once upon a time", "--model", "random-tiny-helium", "-n", "10"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("Once upon a time") and len(cap.out.strip()) > len("Once upon a time")
    assert "‹" not in cap.out and "10 tokens in" in cap.err


def test_sampling_is_seeded(capsys):
    args = ["--model", "random-tiny-helium", "5", "-n", "30", "--temp", "1.0", "--top-k", "50", "--quiet"]
    assert helium.main(args + ["--seed", "1"]) == 0
    a = capsys.readouterr().out
    assert helium.main(args + ["--seed", "1"]) == 0
    assert capsys.readouterr().out == a
    assert helium.main(args + ["--seed", "2"]) == 0
    assert capsys.readouterr().out != a


@pytest.fixture(scope="module")
def helium_dir(tmp_path_factory):
    import sentencepiece as spm

    d = tmp_path_factory.mktemp("helium")
    corpus = d / "corpus.txt"
    corpus.write_text("bonjour le monde, il est temps de parler.\nhello world this is a test.\n" * 50)
    spm.SentencePieceTrainer.Train(
        input=str(corpus), model_prefix=str(d / "tok"), vocab_size=285, minloglevel=2, byte_fallback=True
    )
    cfg_d = preset("random-tiny-helium").to_dict()
    cfg_d.pop("_source")
    cfg_d["tokenizer_name"] = "tok.model"
    cfg_d["text_card"], cfg_d["text_card_out"] = 284, 285  # the tokenizer's vocabulary, as Helium's
    (d / "config.json").write_text(json.dumps(cfg_d))
    save_lm(random_lm(LmConfig.from_dict(cfg_d), seed=9, dtype=mx.float32), d / "model.safetensors")
    return d


def test_text_prompt_from_argument_file_and_stdin(helium_dir, tmp_path, capsys, monkeypatch):
    w = str(helium_dir / "model.safetensors")
    assert helium.main(["--moshi-weight", w, "bonjour le", "-n", "15", "--temp", "0"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("bonjour le") and len(cap.out.strip()) > len("bonjour le")
    assert "tokens in" in cap.err
    (tmp_path / "p.txt").write_text("bonjour le")
    assert helium.main(["--moshi-weight", w, "--prompt-file", str(tmp_path / "p.txt"), "-n", "15", "--temp", "0"]) == 0
    assert capsys.readouterr().out == cap.out
    monkeypatch.setattr(sys, "stdin", io.StringIO("bonjour le"))
    assert helium.main(["--moshi-weight", w, "-", "-n", "15", "--temp", "0"]) == 0
    assert capsys.readouterr().out == cap.out


def test_moshi_checkpoint_as_text_model(capsys):
    assert (
        helium.main(["--model", "random-tiny", "3 4", "-n", "5", "--temp", "0", "--quiet", "--tokenizer", "none"]) == 0
    )
    assert capsys.readouterr().out.count("‹") == 5


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "give the prompt"),
        (["hi", "--prompt-file", "p.txt"], "give the prompt"),
        (["--prompt-file", "missing.txt"], "missing.txt"),
        (["hello"], "token ids"),
        (["1 2", "-n", "-1"], "--max-tokens"),
        (["1 2", "--temp", "-0.5"], "temperature"),
        (["1 2", "--top-p", "1.5"], "top-p"),
        (["1 2000"], "outside the model's vocabulary"),
        (["1 -5"], "token ids must be >= 0, got -5"),  # was "this model has no text tokenizer"
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert helium.main(["--model", "random-tiny-helium", "--tokenizer", "none", *args]) == 2
    cap = capsys.readouterr()
    err = cap.err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert cap.out == ""  # the prompt is not echoed before its error (it was for "1 2000")


def test_conditioned_model_is_refused(tmp_path, capsys):
    from tests.cli.test_run_inference_models import HIBIKI_NARROW

    d = tmp_path / "hibiki"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(HIBIKI_NARROW))
    save_lm(random_lm(LmConfig.from_dict(dict(HIBIKI_NARROW)), seed=1), d / "model.safetensors")
    assert helium.main(["--moshi-weight", str(d / "model.safetensors"), "--tokenizer", "none", "1 2"]) == 2
    assert "not used as a text model" in capsys.readouterr().err


def test_module_entry_point():
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "moshi_mlx.helium",
            "--model",
            "random-tiny-helium",
            "1",
            "-n",
            "3",
            "--quiet",
            "--tokenizer",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("‹") == 3
