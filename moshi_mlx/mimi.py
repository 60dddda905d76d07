"""`python -m moshi_mlx.mimi ...`: see `moshi_mlx.cli.mimi`."""

import sys

from .cli.mimi import main

if __name__ == "__main__":
    sys.exit(main())
