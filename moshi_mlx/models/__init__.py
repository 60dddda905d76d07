"""The models and their configs: the LM (Helium + depformer) and, beside it, Mimi."""
from .mimi import Mimi, MimiConfig, best_backend  # noqa: F401
from ..weights.mimi_loader import load_mimi, random_mimi  # noqa: F401,E402
