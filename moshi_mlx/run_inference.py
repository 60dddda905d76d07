"""`python -m moshi_mlx.run_inference` (upstream's name) = `moshi-run-inference`: see moshi_mlx/cli/run_inference.py."""

from .cli.early import main_module

main_module(__name__, "run_inference")
