"""`python -m moshi_mlx.quality ...`: see `moshi_mlx.cli.quality`."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool (console script `moshi-quality`): its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.quality")


if __name__ == "__main__":
    sys.exit(run())
