"""moshi_mlx: Kyutai's Moshi speech-text model (Helium + depformer + Mimi) on MLX."""

from .errors import AudioError, ConfigError, DeviceError, Error, OutputError, UsageError, WeightsError
from .version import __version__

__all__ = ["__version__", "Error", "UsageError", "ConfigError", "WeightsError", "AudioError", "DeviceError",
           "OutputError"]
