"""`python -m moshi_mlx.stt`: see moshi_mlx/cli/stt.py."""

import sys

from .cli.stt import main

if __name__ == "__main__":
    sys.exit(main())
