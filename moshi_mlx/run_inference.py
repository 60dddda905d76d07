"""`python -m moshi_mlx.run_inference`: see moshi_mlx/cli/run_inference.py."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool (console script `moshi-run-inference`): its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.run_inference")


if __name__ == "__main__":
    sys.exit(run())
