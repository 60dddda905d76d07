"""Where upstream's moshi_mlx lives: its own virtual environment (its import name is also
`moshi_mlx`), created on first use with pip unless the suite is pointed at one."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.mimi_bench import DEFAULT_UPSTREAM_VENV, ensure_upstream_venv


def add_upstream_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--upstream-venv",
        type=Path,
        default=DEFAULT_UPSTREAM_VENV,
        help=f"virtual environment with moshi-mlx==0.3.0 (default {DEFAULT_UPSTREAM_VENV}; created if missing)",
    )
    ap.add_argument("--no-upstream", action="store_true", help="skip upstream moshi_mlx")
    ap.add_argument("--no-create-venv", action="store_true", help="fail instead of creating the upstream venv")


def upstream_python_from_args(a) -> Path | None:
    """The upstream venv's python, or None (skipped, or it could not be made: said on stderr)."""
    if a.no_upstream:
        return None
    try:
        return ensure_upstream_venv(a.upstream_venv, create=not a.no_create_venv)
    except Exception as e:  # noqa: BLE001 - report and go on without upstream
        import sys

        print(f"upstream moshi_mlx unavailable: {e}", file=sys.stderr)
        return None
