"""`python -m moshi_mlx.quality` = `moshi-quality`: see moshi_mlx/cli/quality.py."""

from .cli.early import main_module

main_module(__name__, "quality")
