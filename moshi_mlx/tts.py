"""`python -m moshi_mlx.tts` = `moshi-tts`: see moshi_mlx/cli/tts.py."""

from .cli.early import main_module

main_module(__name__, "tts")
