"""`python -m moshi_mlx.stt`: see moshi_mlx/cli/stt.py."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool (console script `moshi-stt`): its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.stt")


if __name__ == "__main__":
    sys.exit(run())
