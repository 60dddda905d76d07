"""The models and their configs: the LM (Helium + depformer) and, beside it, Mimi."""

from .config import LmConfig, preset as lm_preset, PRESETS as LM_PRESETS  # noqa: F401
from .lm import Lm, LmOutput  # noqa: F401
from .generate import LmGen  # noqa: F401
from .sampling import Sampler  # noqa: F401
from .mimi import Mimi, MimiConfig, best_backend  # noqa: F401

# The loaders live in weights/ (a layer above, which imports this package): they are part of
# this package's API but imported on first use, so either package can be imported first.
_LAZY = {
    "load_lm": "lm_loader",
    "random_lm": "random_state",
    "load_mimi": "mimi_loader",
    "random_mimi": "mimi_loader",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"..weights.{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
