"""`python -m moshi_mlx.local`: see moshi_mlx/cli/local.py."""

import sys

from .cli.local import main

if __name__ == "__main__":
    sys.exit(main())
