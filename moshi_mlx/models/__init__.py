"""The models and their configs: the LM (Helium + depformer) and, beside it, Mimi."""

from .config import LmConfig, preset as lm_preset, PRESETS as LM_PRESETS  # noqa: F401
from .lm import Lm, LmOutput  # noqa: F401
from .generate import LmGen  # noqa: F401
from .sampling import Sampler  # noqa: F401
from ..weights.lm_loader import load_lm, load_lm_from_hub  # noqa: F401,E402
from ..weights.random_state import random_lm  # noqa: F401,E402
from .mimi import Mimi, MimiConfig, best_backend  # noqa: F401


def __getattr__(name):  # Mimi's loaders live in weights/ (a layer above): import on first use
    if name in ("load_mimi", "random_mimi"):
        from ..weights import mimi_loader

        return getattr(mimi_loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
