"""`python -m moshi_mlx.translate` = `moshi-translate`: see moshi_mlx/cli/translate.py."""

from .cli.early import main_module

main_module(__name__, "translate")
