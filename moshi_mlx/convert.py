"""`python -m moshi_mlx.convert ...`: see `moshi_mlx.cli.convert`."""

import sys

from .cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
