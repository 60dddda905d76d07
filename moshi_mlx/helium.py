"""`python -m moshi_mlx.helium`: see moshi_mlx/cli/helium.py."""

import sys

from .cli.helium import main

if __name__ == "__main__":
    sys.exit(main())
