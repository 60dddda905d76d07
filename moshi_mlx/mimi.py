"""`python -m moshi_mlx.mimi` = `moshi-mimi`: see moshi_mlx/cli/mimi.py."""

from .cli.early import main_module

main_module(__name__, "mimi")
