"""The bench tools docs/benchmarks.md names run as written: bench/profile_step.py on a model
folder (the demo model's checkpoint, a few steps; no timing asserted beyond being measured),
bench/soak.py's refusal of a run too short to measure."""

from __future__ import annotations

from bench import profile_step
from moshi_mlx.models.config import preset
from moshi_mlx.weights.random_checkpoint import write_random_checkpoint


def test_profile_step_runs_on_a_folder(tmp_path):
    write_random_checkpoint(preset("random-tiny"), tmp_path, seed=0)
    r = profile_step.profile(str(tmp_path), steps=2, warmup=1)
    assert r["plain_step_ms"] > 0
    assert set(r["instrumented"]) == {"temporal", "depformer", "step"}
    assert r["mat_vecs_ms"]["temporal mat-vecs"] > 0 and r["mat_vecs_ms"]["depformer mat-vecs"] > 0


def test_soak_refuses_a_run_too_short_to_measure(capsys):
    """`bench/soak.py --frames 200` (under the 1000-frame warm-up) measured nothing and said
    FAIL over NaN; one memory sample would say PASS whatever happened. Both are refused."""
    import pytest

    from bench import soak

    for argv in (["--frames", "200"], ["--frames", "1000", "--warmup", "0"]):
        with pytest.raises(SystemExit) as e:
            soak.main(argv)
        assert e.value.code == 2
        assert "fewer than 2 memory samples" in capsys.readouterr().err


def test_step_overhead_options_say_what_they_do():
    """Every option of bench.step_overhead has a help text (--formats, --steps, --warmup,
    --upstream-path, --no-upstream, --cache-dir and --out had none)."""
    from bench import step_overhead

    silent = [a.option_strings[0] for a in step_overhead.parser()._actions if a.option_strings and not a.help]
    assert not silent, silent


def test_step_overhead_steps_and_warmup_are_range_checked(tmp_path, capsys):
    """--steps 0 timed nothing (NaN medians in the table) and a negative --steps or --warmup ran
    as 0; --width 0 or 50 was a traceback per case and --width 64 with q4 a message without
    'error:' (exit 1); each is refused in one line, exit 2, as the tools refuse a bad value.
    --warmup 0 (none) stays."""
    import pytest

    from bench import step_overhead

    for argv, line in (
        (["--steps", "0"], "error: --steps must be >= 1, got 0 (see --help)"),
        (["--steps", "-3"], "error: --steps must be >= 1, got -3 (see --help)"),
        (["--warmup", "-1"], "error: --warmup must be >= 0, got -1 (see --help)"),
        (["--formats", "bf17"], "error: unknown format(s) bf17; known: bf16, q8, q4, mixed-4-8 (see --help)"),
        # --width 0, -64 or 50 was a traceback from each case's config check (ConfigError: dim must be >= 1)
        (["--width", "0"], "error: --width must be >= 16, got 0 (see --help)"),
        (["--width", "-64"], "error: --width must be >= 16, got -64 (see --help)"),
        (["--width", "x"], "error: --width must be an integer, got 'x' (see --help)"),
        (
            ["--width", "50", "--formats", "bf16"],
            "error: --width must be a multiple of 16 (the narrow model's heads are 16 wide), at least 16, got 50 "
            "(see --help)",
        ),
        (
            ["--width", "64"],
            "error: --width 64: quantized formats need a width that is a multiple of 128 (Moshi's MLP is 11/4 x "
            "width wide, MLX's smallest group is 32); use --formats bf16 (see --help)",
        ),
    ):
        with pytest.raises(SystemExit) as e:
            step_overhead.main([*argv, "--no-upstream", "--out", str(tmp_path / "so.json")])
        assert e.value.code == 2 and capsys.readouterr().err.splitlines() == [line]
    a = step_overhead.parser().parse_args(["--steps", "1", "--warmup", "0"])
    assert (a.steps, a.warmup) == (1, 0)
    assert step_overhead.width_problem(64, ["bf16"]) is None and step_overhead.width_problem(128, ["q4"]) is None
