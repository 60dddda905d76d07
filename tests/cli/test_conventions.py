"""docs/cli.md's convention table, enforced: every console script's parser is walked and each
shared flag is checked for its spelling, choices, default and presence; plus the behaviours
the table promises that a parser alone cannot show (overwrite rule, --offline, rustymimi,
checks before loading)."""

from __future__ import annotations

import argparse
import importlib
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from moshi_mlx.cli.scripts import TOOLS
from moshi_mlx.cli.flags import LORA_HELP
from moshi_mlx.constants import MIMI_BACKENDS
from moshi_mlx.runtime.loading import DEMO_MODELS, DTYPES

ROOT = Path(__file__).resolve().parents[2]
WRITES_FILES = {"local", "run_inference", "stt", "tts", "mimi", "convert", "quality", "translate"}  # take --force
# load an LM through the resolver from one set of files: take --lora-weight (quality compares
# several models, which one flag could not tell apart; mimi has no LM)
TAKES_LORA = {"local", "run_inference", "local_web", "stt", "helium", "tts", "translate", "convert"}
# PersonaPlex's voice prompt and role: the conversation tools (tts's --voice is its own TTS voice)
TAKES_PERSONA = {"local", "run_inference", "local_web"}
HAS_CODEC = {"local", "run_inference", "stt", "local_web", "tts", "mimi", "translate"}  # take --mimi-backend
DEMO_NAMES = set(DEMO_MODELS) | {"tts-tiny"}


def _parsers():
    """(script, module, parser) for every console script; a tool with subcommands gives one
    entry per subcommand."""
    for script, module in TOOLS.items():
        ap = importlib.import_module(f"moshi_mlx.cli.{module}").parser()
        yield script, module, ap
        for action in ap._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield script, module, sub


def _flags(ap: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in ap._actions for s in a.option_strings}


ALL = list(_parsers())


@pytest.mark.parametrize("script,module,ap", ALL, ids=[f"{s}:{ap.prog}" for s, _, ap in ALL])
def test_every_parser_follows_the_table(script, module, ap):
    flags = _flags(ap)
    assert ap.prog.split()[0] == script  # usage lines name the console script
    assert ap.allow_abbrev is False  # `--quantize 8` is not silently `--quantized 8`
    for a in ap._actions:
        assert a.help, f"{script}: {a.option_strings or a.dest} has no help"
    if any(isinstance(a, argparse._SubParsersAction) for a in ap._actions):
        return  # the subcommands carry the flags
    flags = {s: a for s, a in flags.items() if a.help != argparse.SUPPRESS}  # old names kept for a message
    assert "--offline" in flags and flags["--offline"].default is False  # every tool can reach the Hub
    assert ("--force" in flags) == (module in WRITES_FILES)
    if "--force" in flags:
        assert flags["--force"].default is False
    assert "--model" in flags and set(flags["--model"].choices) <= DEMO_NAMES and flags["--model"].default is None
    q = flags.get("-q")
    if module not in ("mimi", "quality"):
        assert q is not None and {"--quantized", "--quantize"} <= set(q.option_strings) and q.default is None
        if module == "convert":  # -q [BITS]: other bit counts too, and -q alone (mlx-lm's switch)
            assert q.nargs == "?"
        else:
            assert tuple(q.choices) == (4, 8)
    assert ("--mimi-backend" in flags) == (module in HAS_CODEC)
    assert ("--lora-weight" in flags) == (module in TAKES_LORA)
    assert ("--persona" in flags) == (module in TAKES_PERSONA)  # translate offered both, refusing them
    if module != "tts":
        assert ("--voice" in flags) == (module in TAKES_PERSONA)
    if "--lora-weight" in flags:  # one definition (cli/flags.py); upstream's --config-path with it
        assert flags["--lora-weight"].help == LORA_HELP and flags["--lora-weight"].dest == "lora_weight"
    if module != "mimi":  # the LM's config: one name in every tool that loads an LM
        # (convert and quality had only --config, which their --lora-weight help did not name)
        assert flags["--config-path"] is flags["--lm-config"] and flags["--lm-config"].dest in ("lm_config", "config")
    assert not any("fuse" in s for s in flags)  # always fused: no --no_fuse_lora that would do nothing
    if "--mimi-backend" in flags:
        mb = flags["--mimi-backend"]
        assert tuple(mb.choices) == MIMI_BACKENDS and mb.default == ("mlx" if module == "mimi" else "auto")
    if "--dtype" in flags:
        assert tuple(flags["--dtype"].choices) == DTYPES and flags["--dtype"].default == "auto"
    if "--quiet" in flags:
        assert flags["--quiet"].default is False


@pytest.mark.parametrize("script,module,ap", ALL, ids=[f"{s}:{ap.prog}" for s, _, ap in ALL])
def test_every_seed_defaults_to_the_one_seed(script, module, ap):
    """One default seed for every tool and the API (constants.DEFAULT_SEED), shown in --help:
    the run CLIs had 299792458, convert/mimi/quality 0 and the API 0 (different demo weights)."""
    from moshi_mlx.constants import DEFAULT_SEED

    parsers = [ap] + [p for a in ap._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]
    for p in parsers:
        seed = _flags(p).get("--seed")
        if seed is not None:
            assert seed.default == DEFAULT_SEED and str(DEFAULT_SEED) in seed.help, f"{script}: --seed"


def test_help_names_each_tools_own_default_model():
    def hf_help(module):
        return _flags(importlib.import_module(f"moshi_mlx.cli.{module}").parser())["--hf-repo"].help

    assert "helium-1-preview-2b" in hf_help("helium") and "moshiko" not in hf_help("helium")
    assert "stt-1b-en_fr" in hf_help("stt") and "moshiko" not in hf_help("stt")
    assert "moshiko" in hf_help("local") and "tts-1.6b" in hf_help("tts")
    from moshi_mlx.constants import DEFAULT_PRESET
    from moshi_mlx.models.config import PRESETS

    # the Moshi tools name the repo the resolver picks with no source: the default preset's
    assert f"(default: {PRESETS[DEFAULT_PRESET][1]['bf16'][0]}," in " ".join(hf_help("local").split())


def test_doc_table_names_each_tools_own_default_repo():
    """cli.md's --hf-repo row names the repo each tool loads with no model flag (its DEFAULT_REPO)."""
    from moshi_mlx.cli import helium, stt, translate
    from moshi_mlx.constants import DEFAULT_PRESET
    from moshi_mlx.models.config import PRESETS
    from moshi_mlx.runtime import tts
    from moshi_mlx.weights import mimi_loader

    row = next(line for line in (ROOT / "docs" / "cli.md").read_text().splitlines() if line.startswith("| `--hf-repo"))
    for module, repo in (
        ("stt", stt.DEFAULT_REPO),
        ("helium", helium.DEFAULT_REPO),
        ("tts", tts.DEFAULT_REPO),
        ("translate", translate.DEFAULT_REPO),
        ("mimi", mimi_loader.DEFAULT_REPO),
        ("local", PRESETS[DEFAULT_PRESET][1]["bf16"][0]),
    ):
        assert f"`{repo}` ({module}" in row, (module, repo, row)


def test_each_tools_own_default_repo(capsys):
    """No model flag: the tool's own repo (`use_default_repo`). -q picks among Moshi's repos, so
    stt and translate, whose repos have no q4/q8 twins, refuse it in one line before loading;
    helium keeps its repo, whose q4/q8 files -q picks."""
    from moshi_mlx.cli import stt, translate
    from moshi_mlx.cli.model_args import use_default_repo

    for main, line in (
        (stt.main, "for speech-to-text give --hf-repo (e.g. a q4/q8 folder made by moshi-convert)"),
        (translate.main, "for Hibiki-Zero give --hf-repo (e.g. a q4/q8 folder made by moshi-convert)"),
    ):
        assert main(["-q", "4"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [f"error: -q picks Moshi's repos; {line}"]
    args = argparse.Namespace(hf_repo=None, moshi_weight=None, model=None, quantized=8)
    use_default_repo(args, "owner/repo")
    assert args.hf_repo == "owner/repo"
    for given in ({"hf_repo": "mine"}, {"moshi_weight": "w.safetensors"}, {"model": "random-tiny"}):
        args = argparse.Namespace(**{"hf_repo": None, "moshi_weight": None, "model": None, "quantized": 4, **given})
        use_default_repo(args, "owner/repo", "never said")
        assert args.hf_repo == given.get("hf_repo")


def test_the_converter_is_named_one_way():
    """Every message names the converter by its console script (docs/cli.md: usage lines name
    the console script), from constants.CONVERT_COMMAND: the script cli/scripts.py lists for
    the convert tool. `python -m moshi_mlx.convert` is said only as that alias."""
    import re

    from moshi_mlx.constants import CONVERT_COMMAND

    assert TOOLS[CONVERT_COMMAND] == "convert"
    for script, _, ap in ALL:
        text = " ".join(ap.format_help().split()).replace("python -m moshi_mlx.", "")
        assert not re.search(r"moshi_mlx[._-]convert", text), script
        # nor another tool by its module name ('convert --eval-codes', 'run_inference --save-tokens')
        assert not re.search(r"(?<![\w.-])(convert|run_inference|quality|mimi) (--|decode|encode)", text), script
        if "convert" in script:
            assert ap.prog == CONVERT_COMMAND


def test_no_abbreviations_and_quantize_spellings():
    from moshi_mlx.cli import local, tts

    assert local.parser().parse_args(["--quantize", "8"]).quantized == 8
    assert tts.parser().parse_args(["-q", "4"]).quantized == 4
    with pytest.raises(SystemExit):
        local.parser().parse_args(["--quant", "8"])


def test_convert_q_forms():
    from moshi_mlx.cli import convert

    ap = convert.parser()
    assert ap.parse_args(["--out", "o", "-q"]).quantize == 0  # bare: the default bits
    assert ap.parse_args(["--out", "o", "-q", "8"]).quantize == 8


def test_doc_table_names_every_shared_flag():
    doc = (ROOT / "docs" / "cli.md").read_text()
    for flag in (
        "--model",
        "--hf-repo",
        "-q {4,8}",
        "--mimi-backend",
        "--dtype",
        "--offline",
        "--force",
        "--quiet",
        "--seed",
        "--lora-weight",
        "130",
        "143",
        "129",
    ):
        assert flag in doc, flag
    for script in TOOLS:
        assert script in doc, script


def test_upstreams_command_names_run_the_same_tools(monkeypatch):
    """Upstream moshi_mlx's console scripts (its pyproject.toml: moshi-local, moshi-local-web)
    are installed by setup.py, and its `python -m` modules (its README) launch, as the same
    tools (moshi-local-web was not installed: only moshi-web)."""
    import setuptools

    root = Path(__file__).resolve().parents[2]
    given: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kw: given.update(kw))
    exec(compile((root / "setup.py").read_text(), "setup.py", "exec"), {"__file__": str(root / "setup.py")})
    scripts = dict(line.split(" = ") for line in given["entry_points"]["console_scripts"])
    for script, tool in {"moshi-local": "local", "moshi-local-web": "local_web"}.items():
        assert scripts[script] == f"moshi_mlx.cli.entry:{tool}", script
    assert {s: t.split(":")[1] for s, t in scripts.items() if s in TOOLS} == TOOLS
    for module in ("local", "local_web", "run_inference"):
        assert f'main_module(__name__, "{module}")' in (root / "moshi_mlx" / f"{module}.py").read_text()


# upstream moshi_mlx's flags (local.py, local_web.py, run_inference.py at 0.3.0) that are not
# in the shared table: each is taken, or refused in a line that says why
UPSTREAM_FLAGS = {
    "local": [["--steps", "4000"]],
    "local_web": [["--no-browser"]],
    "run_inference": [["--verbose"]],
}


@pytest.mark.parametrize("module,argv", [(m, a) for m, argvs in UPSTREAM_FLAGS.items() for a in argvs])
def test_upstreams_other_flags_are_taken(module, argv):
    """`python -m moshi_mlx.local -q 4 --steps 2000` or `moshi_mlx.local_web --no-browser`, as
    upstream's users type them, were 'error: unrecognized arguments'."""
    ap = importlib.import_module(f"moshi_mlx.cli.{module}").parser()
    extra = ["in.wav"] if module == "run_inference" else []
    ap.parse_args([*extra, *argv])


def test_upstreams_steps_stop_the_live_loop(capsys):
    from moshi_mlx.cli import local

    assert local.main(["--model", "random-tiny", "--simulate", "--steps", "12"]) == 0
    assert "\n12 steps, delay median" in capsys.readouterr().err
    assert local.main(["--model", "random-tiny", "--simulate", "--steps", "12", "--duration", "2"]) == 2
    assert capsys.readouterr().err == "error: --steps and --duration both say when to stop: give one of them\n"


@pytest.mark.parametrize("flag", ["--static", "--ssl"])
def test_upstreams_web_flags_not_taken_say_why(flag, capsys):
    from moshi_mlx.cli import local_web

    assert local_web.main(["--model", "random-tiny", flag, "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag} ") and "not taken" in err and err.count("\n") == 1, err


@pytest.mark.parametrize("module", ["stt", "translate"])
def test_where_q_alone_is_refused_its_help_says_so(module, tmp_path, capsys):
    """moshi-translate's -q help said 'pick the repo/file of that quantization', as moshi-local's,
    while `moshi-translate -q 4` is refused (no q4 twin of its repo): the help says what -q does."""
    mod = importlib.import_module(f"moshi_mlx.cli.{module}")
    q = _flags(mod.parser())["-q"].help
    assert "--hf-repo" in q and "folder" in q and "pick the repo" not in q, module
    _tone(tmp_path / "in.wav")
    argv = [str(tmp_path / "in.wav")] + ([str(tmp_path / "out.wav")] if module == "translate" else [])
    assert mod.main([*argv, "-q", "4", "--offline"]) == 2
    assert capsys.readouterr().err.startswith("error: -q picks Moshi's repos; ")


def test_the_codebook_count_has_one_flag_name():
    """moshi-tts's --n-q (the API's n_q) was moshi-mimi's -n/--num-codebooks: one name in every
    tool (and moshi-mimi subcommand) with a flag for how many codebooks to use."""
    counts = {
        ap.prog: a
        for _, _, ap in ALL
        for a in ap._actions
        if a.option_strings and a.nargs is None and "codebooks" in (a.help or "").split(" (")[0]
    }
    assert set(counts) == {"moshi-tts", "moshi-mimi roundtrip", "moshi-mimi encode", "moshi-mimi decode"}, counts
    for prog, a in counts.items():
        assert "--n-q" in a.option_strings, prog


# ---- what the table promises, run --------------------------------------------------------------


def _tone(path, seconds=1.0):
    t = np.arange(int(24000 * seconds)) / 24000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 24000)


def test_explicit_rustymimi_not_installed_is_one_line(monkeypatch, tmp_path, capsys):
    from moshi_mlx.cli import mimi, run_inference, tts
    from moshi_mlx.models import mimi_rust

    monkeypatch.setattr(mimi_rust, "rustymimi_available", lambda: False)
    _tone(tmp_path / "in.wav")
    for main, argv in (
        (run_inference.main, [str(tmp_path / "in.wav"), "--model", "random-tiny"]),
        (mimi.main, ["encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npy")]),
        (tts.main, ["hi", str(tmp_path / "o.wav"), "--model", "tts-tiny", "--voice", "random"]),
    ):
        assert main([*argv, "--mimi-backend", "rustymimi"]) == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "rustymimi package is not installed" in err, err
    assert not (tmp_path / "c.npy").exists() and not (tmp_path / "o.wav").exists()


def test_demo_model_with_rustymimi_is_refused_not_silently_mlx(tmp_path, capsys):
    from moshi_mlx.cli import run_inference

    _tone(tmp_path / "in.wav")
    assert run_inference.main([str(tmp_path / "in.wav"), "--model", "random-tiny", "--mimi-backend", "rustymimi"]) == 2
    assert "runs on MLX only" in capsys.readouterr().err


def test_overwrite_rule_run_inference_and_mimi(tmp_path, capsys):
    from moshi_mlx.cli import mimi, run_inference

    _tone(tmp_path / "in.wav")
    out = tmp_path / "o.wav"
    out.write_bytes(b"keep")
    assert run_inference.main([str(tmp_path / "in.wav"), str(out), "--model", "random-tiny", "--quiet"]) == 2
    assert mimi.main(["roundtrip", str(tmp_path / "in.wav"), str(out), "--model", "random-tiny", "--quiet"]) == 2
    assert out.read_bytes() == b"keep" and capsys.readouterr().err.count("use --force") == 2
    assert (
        mimi.main(
            [
                "roundtrip",
                str(tmp_path / "in.wav"),
                str(out),
                "--model",
                "random-tiny",
                "--quiet",
                "--force",
                "--mimi-backend",
                "auto",
            ]
        )
        == 0
    )  # auto: MLX for the tiny codec, even on a CPU
    assert sf.info(str(out)).frames == 24000


def test_convert_force_never_writes_over_its_source(tmp_path, capsys):
    from moshi_mlx.cli import convert

    src = tmp_path / "src"
    assert convert.main(["--model", "random-tiny", "--out", str(src), "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for argv in (
        [str(src), "--out", str(src), "-q", "--force"],
        [str(src / "model.safetensors"), "--out", str(src), "-q", "4", "--force"],
        ["--hf-repo", str(src), "--out", str(src), "-q", "--force"],
    ):
        assert convert.main([*argv, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "holds the input" in err and err.count("error:") == 1, err
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_quality_takes_the_demo_model_as_reference(tmp_path, capsys):
    from moshi_mlx.cli import convert, quality

    out = tmp_path / "tiny-q4"
    assert convert.main(["--model", "random-tiny", "--out", str(out), "-q", "--quiet"]) == 0
    capsys.readouterr()
    assert quality.main(["--model", "random-tiny", str(out), "--frames", "4", "--json", str(tmp_path / "q.json")]) == 0
    assert "top-1" in capsys.readouterr().out.lower() or (tmp_path / "q.json").exists()
    assert quality.main(["--model", "random-tiny", str(out), "--frames", "4", "--json", str(tmp_path / "q.json")]) == 2
    assert "use --force" in capsys.readouterr().err


@pytest.mark.parametrize("tool", ["mimi", "tts", "convert", "run_inference"])
def test_offline_is_accepted_and_honoured(tool, tmp_path, capsys, monkeypatch):
    """--offline reaches the Hub layer in every tool (tts, mimi, quality and convert rejected the
    flag): a repo not in the cache is one error line, nothing asked of the network."""
    from moshi_mlx.weights import hub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(hub, "_hub_unreachable", lambda: pytest.fail("the network was consulted"), raising=False)
    _tone(tmp_path / "in.wav")
    repo = ["--hf-repo", "someone/not-cached", "--offline"]
    argv = {
        "mimi": ["encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npy"), *repo],
        "tts": ["hi", str(tmp_path / "o.wav"), "--voice", "random", *repo],
        "convert": ["--out", str(tmp_path / "out"), *repo],
        "run_inference": [str(tmp_path / "in.wav"), *repo],
    }[tool]
    rc = importlib.import_module(f"moshi_mlx.cli.{tool}").main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o.wav").exists()


def test_text_model_refused_before_the_device_and_the_server(tmp_path, capsys):
    from moshi_mlx.cli import local, local_web

    _tone(tmp_path / "in.wav")
    assert local.main(["--model", "random-tiny-helium", "--simulate", str(tmp_path / "in.wav")]) == 2
    err = capsys.readouterr().err
    assert "text model" in err and "simulated device" not in err and "listening" not in err, err
    assert local_web.main(["--model", "random-tiny-helium", "--port", "0"]) == 2
    assert "text model" in capsys.readouterr().err


def test_web_port_taken_is_found_before_loading(capsys, monkeypatch):
    from moshi_mlx.cli import local_web, model_args

    monkeypatch.setattr(model_args, "load", lambda *a, **k: pytest.fail("the model was loaded"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        assert local_web.main(["--model", "random-tiny", "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_simulated_session_prints_no_portaudio_or_nan(tmp_path):
    _tone(tmp_path / "in.wav", 1.0)
    for model in ("random-tiny", "random-tiny-stt"):
        r = subprocess.run(
            [sys.executable, "-m", "moshi_mlx.local", "--model", model, "--simulate", str(tmp_path / "in.wav")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        assert "PortAudio" not in r.stderr and "nan ms" not in r.stderr, r.stderr
        assert ("no audio out" in r.stderr) == (model == "random-tiny-stt"), r.stderr  # STT: text only


def test_converted_demo_model_loads_as_it_is(tmp_path, capsys):
    """convert --model random-tiny carries the demo's tokenizer and codec ('random') into the folder:
    it loaded only with --tokenizer none --mimi-weight random ('no file tokenizer_spm_32k_3.model')."""
    from moshi_mlx.cli import convert, run_inference

    out = tmp_path / "tiny-q4"
    assert convert.main(["--model", "random-tiny", "--out", str(out), "-q", "4", "--quiet"]) == 0
    assert (out / "demo_tokenizer.model").is_file()
    _tone(tmp_path / "in.wav")
    capsys.readouterr()
    assert run_inference.main([str(tmp_path / "in.wav"), str(tmp_path / "o.wav"), "--hf-repo", str(out)]) == 0
    assert sf.info(str(tmp_path / "o.wav")).frames == 13 * 1920  # 1 s, rounded up to a frame


def test_simulate_without_a_file_plays_the_packaged_clip(tmp_path):
    import moshi_mlx

    assert sf.info(moshi_mlx.demo_clip()).frames > 0
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "moshi_mlx.stt",
            "--model",
            "random-tiny-stt",
            "--simulate",
            "--duration",
            "1",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0 and "hello.wav" in r.stderr, r.stderr


def test_the_package_stands_alone(tmp_path):
    """Its own distribution name (PyPI's moshi_mlx is upstream), a LICENSE, and the demo's files
    (tokenizer, clip, configs) as package data: what `pip install .` copies (build_py)."""
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "--name"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert r.stdout.strip().splitlines()[-1] == "moshi-mlx-local", r.stderr
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    pkg = tmp_path / "moshi_mlx"
    for f in (
        "assets/hello.wav",
        "assets/demo_tokenizer.model",
        "configs/random-tiny.json",
        "configs/mimi-tiny.json",
        "cli/scripts.py",
        "web/static/index.html",
    ):
        assert (pkg / f).is_file(), f
    assert (pkg / "assets" / "demo_tokenizer.model").stat().st_size < 100_000


def test_load_lm_refuses_a_non_float_dtype_before_reading(tmp_path):
    """models.load_lm(..., dtype=mx.int32) loaded, then the first step failed inside MLX."""
    import mlx.core as mx

    from moshi_mlx import UsageError, models

    for dtype in (mx.int32, mx.uint8, "float32", 3):
        with pytest.raises(UsageError, match="dtype must be None"):
            models.load_lm(tmp_path / "missing.safetensors", dtype=dtype)  # refused before the file is looked for
    from moshi_mlx.models.config import preset
    from moshi_mlx.weights.random_checkpoint import write_random_checkpoint

    lm = models.load_lm(write_random_checkpoint(preset("random-tiny"), tmp_path), dtype=mx.float16)
    assert lm.text_emb.weight.dtype == mx.float16  # a float dtype still loads, as asked


def test_lag_host_and_port_defaults_are_written_once():
    """The live loop's lag bound (runtime/pipeline.py MAX_LAG_MS) and moshi-web's address
    (web/protocol.py DEFAULT_HOST / DEFAULT_PORT) are what every flag, signature and help text
    says: one written alone elsewhere fails here."""
    import dataclasses
    import inspect

    from moshi_mlx.cli import local, local_web, translate
    from moshi_mlx.runtime.live import LiveOptions
    from moshi_mlx.runtime.model import Model
    from moshi_mlx.runtime.pipeline import MAX_LAG_MS, DuplexPipeline
    from moshi_mlx.web.conversation import Conversation
    from moshi_mlx.web.protocol import DEFAULT_HOST, DEFAULT_PORT
    from moshi_mlx.web.server import make_app, serve

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    for fn in (DuplexPipeline.__init__, Model.pipeline, Conversation.__init__, make_app, serve):
        assert default(fn, "max_lag_ms") == MAX_LAG_MS, fn
    assert {f.name: f.default for f in dataclasses.fields(LiveOptions)}["max_lag_ms"] == MAX_LAG_MS
    assert (
        default(make_app, "host") == default(serve, "host") == DEFAULT_HOST and default(serve, "port") == DEFAULT_PORT
    )
    for tool in (local, local_web, translate):
        flags = _flags(tool.parser())
        assert flags["--max-lag-ms"].default == MAX_LAG_MS
        assert f"(default {MAX_LAG_MS:g}" in flags["--max-lag-ms"].help % {"default": MAX_LAG_MS}
    flags = _flags(local_web.parser())
    assert flags["--host"].default == DEFAULT_HOST and flags["--port"].default == DEFAULT_PORT
    assert f"(default {DEFAULT_PORT};" in flags["--port"].help % {"default": DEFAULT_PORT}


@pytest.mark.parametrize("script,module,ap", ALL, ids=[f"{s}:{ap.prog}" for s, _, ap in ALL])
def test_a_help_quoting_its_default_quotes_the_flags_default(script, module, ap):
    """A help text that says 'default X' of a flag with a default says that default (written
    once, as %(default)s or from the same constant), so the two cannot drift apart."""
    import re

    for a in ap._actions:
        if a.default is None or a.default is argparse.SUPPRESS or not a.help or a.help == argparse.SUPPRESS:
            continue
        text = a.help % {"default": a.default, "prog": ap.prog}
        for said in re.findall(r"default:? ([^\s;,)]+)", text):
            ok = {str(a.default)} | ({format(a.default, "g")} if isinstance(a.default, float) else set())
            assert said in ok, f"{script} {a.option_strings}: help says default {said}, the flag's is {a.default!r}"


def test_defaults_said_where_the_flag_has_none_come_from_the_code():
    """Flags whose default is None (decided later, in the code) quote the code's constant."""
    import inspect

    from moshi_mlx.cli import convert, quality, stt
    from moshi_mlx.constants import MIMI_CODEBOOKS
    from moshi_mlx.models.mimi_rust import RustyMimi
    from moshi_mlx.runtime.stt import TEXT_TEMP
    from moshi_mlx.weights import convert as wconvert
    from moshi_mlx.weights.mimi_loader import load_mimi, random_mimi
    from moshi_mlx.weights.quality import EVAL_FRAMES, evaluate

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    conv = _flags(convert.build_parser())
    assert f"(default {EVAL_FRAMES})" in conv["--eval-frames"].help and default(evaluate, "frames") == EVAL_FRAMES
    assert _flags(quality.build_parser())["--frames"].default == EVAL_FRAMES
    stored = wconvert.FLOAT_DTYPES[conv["--weights-dtype"].default]
    assert default(wconvert.convert, "dtype") == default(wconvert.plan_conversion, "dtype") == stored
    assert f"(default {TEXT_TEMP:g}:" in _flags(stt.parser())["--temp"].help
    from moshi_mlx.weights.quantize import DEFAULT_BITS, make_spec
    from moshi_mlx.weights.recipes import make_recipe

    assert f"-q alone: {DEFAULT_BITS} " in conv["-q"].help and make_spec().bits == DEFAULT_BITS
    assert make_recipe("mixed").name == f"mixed-{DEFAULT_BITS}-8"
    mimi_flags = {f: a for _, m, p in ALL if m == "mimi" for f, a in _flags(p).items()}
    assert f"(default {MIMI_CODEBOOKS};" in mimi_flags["--num-codebooks"].help
    for fn in (load_mimi, random_mimi, RustyMimi.__init__):
        assert default(fn, "num_codebooks") == MIMI_CODEBOOKS, fn


def test_audio_rates_are_the_constants():
    """The 24 kHz of the output files' help, Mimi's 12.5 Hz frame rate and the echo filter's
    rate are constants.SAMPLE_RATE / FRAME_RATE, not numbers written again."""
    import inspect

    from moshi_mlx.audio.echo_filter import LinearEchoCanceller, ResidualSuppressor
    from moshi_mlx.cli import run_inference, translate, tts
    from moshi_mlx.constants import FRAME_RATE, FRAME_SIZE, SAMPLE_RATE
    from moshi_mlx.models.mimi_config import MimiConfig, mimi_202407
    from moshi_mlx.models.persona import SILENCE_FRAMES

    for tool in (run_inference, translate, tts):
        (outfile,) = [a for a in tool.parser()._actions if a.dest == "outfile"]
        assert f"({SAMPLE_RATE // 1000} kHz;" in outfile.help, tool
    d = mimi_202407().to_dict()
    d.pop("frame_rate")
    cfg = MimiConfig.from_dict(d)  # a config.json without frame_rate
    assert cfg.frame_rate == MimiConfig.frame_rate == FRAME_RATE and cfg.frame_size == FRAME_SIZE
    assert SILENCE_FRAMES == int(0.5 * FRAME_RATE)
    for cls in (LinearEchoCanceller, ResidualSuppressor):
        assert inspect.signature(cls.__init__).parameters["rate"].default == SAMPLE_RATE


def test_no_module_defines_a_constants_name_again():
    """A file name or default of moshi_mlx.constants is not given a second name elsewhere
    (`NAME = "voices.tgz"` beside constants.VOICES_NAME: two sources that can drift apart)."""
    import ast

    from moshi_mlx import constants

    values = {getattr(constants, n): n for n in constants.__all__ if isinstance(getattr(constants, n), str)}
    again = []
    for path in sorted((ROOT / "moshi_mlx").rglob("*.py")):
        if path.name == "constants.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, ast.Constant) and value.value in values:
                again.append(f"{path.relative_to(ROOT)}:{node.lineno} (constants.{values[value.value]})")
    assert not again, again


def test_every_flag_is_documented():
    """Each spelling of each flag of every tool (hidden test flags aside) is named in docs/ or
    the README, so `--help` is never the only place a user can learn of one."""
    import re

    docs = "\n".join(p.read_text() for p in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
    missing = set()
    for script, _, ap in ALL:
        for a in ap._actions:
            if a.help == argparse.SUPPRESS:
                continue
            for s in a.option_strings:
                if s not in ("-h", "--help") and not re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", docs):
                    missing.add(f"{script} {s}")
    assert not missing, sorted(missing)


def test_api_doc_names_every_demo_model():
    """docs/python-api.md's source table names every demo model `moshi_mlx.load` builds."""
    doc = (ROOT / "docs" / "python-api.md").read_text()
    assert not [m for m in DEMO_MODELS if f'`"{m}"`' not in doc]


def test_docs_name_every_preset():
    """Every LM preset (`models.LM_PRESETS`, what `--lm-config NAME` and `load(NAME)` take) is
    named in docs/lm.md, which points to the doc of its tool."""
    from moshi_mlx.models import LM_PRESETS

    doc = (ROOT / "docs" / "lm.md").read_text()
    assert not [p for p in LM_PRESETS if f"`{p}`" not in doc]


def test_readme_lists_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert not [p.name for p in (ROOT / "docs").glob("*.md") if f"| [docs/{p.name}](docs/{p.name}) |" not in readme]
