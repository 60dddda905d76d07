"""`python -m moshi_mlx.local` (upstream's name) = `moshi-local`: see moshi_mlx/cli/local.py."""

from .cli.early import main_module

main_module(__name__, "local")
