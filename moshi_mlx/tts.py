"""`python -m moshi_mlx.tts`: see moshi_mlx/cli/tts.py."""

import sys

from .cli.tts import main

if __name__ == "__main__":
    sys.exit(main())
