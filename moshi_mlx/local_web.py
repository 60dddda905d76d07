"""`python -m moshi_mlx.local_web`: see moshi_mlx/cli/local_web.py."""

import sys

from .cli.local_web import main

if __name__ == "__main__":
    sys.exit(main())
