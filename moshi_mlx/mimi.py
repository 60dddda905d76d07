"""`python -m moshi_mlx.mimi` (upstream's name) = `moshi-mimi`: see moshi_mlx/cli/mimi.py."""

from .cli.early import main_module

main_module(__name__, "mimi")
