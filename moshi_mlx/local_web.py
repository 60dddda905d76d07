"""`python -m moshi_mlx.local_web` (upstream's name) = `moshi-web`: see moshi_mlx/cli/local_web.py."""

from .cli.early import main_module

main_module(__name__, "local_web")
