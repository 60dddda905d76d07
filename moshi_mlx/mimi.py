"""`python -m moshi_mlx.mimi ...`: see `moshi_mlx.cli.mimi`."""

from .cli.mimi import main

if __name__ == "__main__":
    main()
