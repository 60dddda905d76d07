"""`python -m moshi_mlx.convert ...`: see `moshi_mlx.cli.convert`."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool (console script `moshi-convert`): its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.convert")


if __name__ == "__main__":
    sys.exit(run())
