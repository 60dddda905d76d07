"""`python -m moshi_mlx.convert ...`: see `moshi_mlx.cli.convert`."""

from .cli.convert import main

if __name__ == "__main__":
    main()
