"""`python -m moshi_mlx.helium` = `moshi-helium`: see moshi_mlx/cli/helium.py."""

from .cli.early import main_module

main_module(__name__, "helium")
