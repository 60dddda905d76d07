"""moshi_mlx: Kyutai's Moshi speech-text model (Helium + depformer + Mimi) on MLX."""

from .version import __version__

__all__ = ["__version__"]
