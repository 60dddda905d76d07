"""`python -m moshi_mlx.convert` = `moshi-convert`: see moshi_mlx/cli/convert.py."""

from .cli.early import main_module

main_module(__name__, "convert")
