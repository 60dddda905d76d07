"""`WeightsError` (defined in moshi_mlx/errors.py, importable from here too)."""

from ..errors import WeightsError

__all__ = ["WeightsError"]
