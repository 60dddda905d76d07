"""`python -m moshi_mlx.stt` = `moshi-stt`: see moshi_mlx/cli/stt.py."""

from .cli.early import main_module

main_module(__name__, "stt")
