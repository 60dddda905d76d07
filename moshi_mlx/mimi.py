"""`python -m moshi_mlx.mimi ...`: see `moshi_mlx.cli.mimi`."""

import sys

from .cli.runner import launch


def run() -> int:
    """Run the tool: its module is imported under the runner's signal
    rules (a Ctrl-C during the import is one line too)."""
    return launch("moshi_mlx.cli.mimi")


if __name__ == "__main__":
    sys.exit(run())
