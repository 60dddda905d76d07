"""`python -m moshi_mlx.quality ...`: see `moshi_mlx.cli.quality`."""

import sys

from .cli.quality import main

if __name__ == "__main__":
    sys.exit(main())
