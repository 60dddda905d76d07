"""`python -m moshi_mlx.run_inference`: see moshi_mlx/cli/run_inference.py."""

import sys

from .cli.run_inference import main

if __name__ == "__main__":
    sys.exit(main())
