"""moshi_mlx: Kyutai's Moshi speech-text model (Helium + depformer + Mimi) on MLX.

    import moshi_mlx
    model = moshi_mlx.load("kyutai/moshiko-mlx-q4")      # or a folder, a preset, "random-tiny"
    with model.conversation(sample_rate=16000) as conv:
        out = conv.feed(pcm_chunk)                        # the model's audio and text so far

`import moshi_mlx` stays cheap: `load` and the classes it returns are imported on first use.
"""

from .errors import AudioError, ConfigError, DeviceError, Error, OutputError, UsageError, WeightsError
from .version import __version__

_LAZY = {
    "load": "runtime.loading",
    "Model": "runtime.model",
    "Conversation": "runtime.conversation",
    "Output": "runtime.conversation",
    "TextPiece": "runtime.conversation",
    "Response": "runtime.model",
}


def demo_clip() -> str:
    """Path of the short spoken clip shipped with the package (the offline demo's microphone:
    `moshi-local --model random-tiny --simulate`, examples/talk.py)."""
    from importlib import resources

    return str(resources.files(__name__) / "assets" / "hello.wav")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = [
    "__version__",
    "demo_clip",
    "load",
    "Model",
    "Conversation",
    "Output",
    "TextPiece",
    "Response",
    "Error",
    "UsageError",
    "ConfigError",
    "WeightsError",
    "AudioError",
    "DeviceError",
    "OutputError",
]
