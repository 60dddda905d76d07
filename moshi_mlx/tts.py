"""`python -m moshi_mlx.tts`: see moshi_mlx/cli/tts.py."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool (console script `moshi-tts`): its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.tts")


if __name__ == "__main__":
    sys.exit(run())
