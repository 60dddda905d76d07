"""`load_mimi` / `random_mimi`: build a Mimi codec and fill it from the published checkpoint
(a path, `hf://owner/repo/file`, or the file a Hub repo's config.json names), or from a
seeded random checkpoint of the real architecture (noise, for offline smoke tests)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import mlx.core as mx

from ..constants import MIMI_BACKENDS, MIMI_CODEBOOKS, MIMI_NAME, MIMI_REPO  # noqa: F401  (MIMI_NAME: re-exported)
from ..errors import UsageError
from ..models.mimi import Mimi
from ..models.mimi_config import MimiConfig, mimi_202407
from ..modules.blas_layout import column_major_linears
from .errors import WeightsError
from .hub import hf_get
from .mimi_keys import check_published, random_published_weights, to_model_weights
from .safetensors_io import SafetensorsFile, mimi_gguf_instead

DEFAULT_REPO = MIMI_REPO
BACKENDS = tuple(b for b in MIMI_BACKENDS if b != "auto")  # the codecs "auto" resolves to
# centroid std of random_mimi: close to the latent std its random encoder produces, so the
# codes vary with the input (measured with scripts/make_fixtures_mimi.py)
RANDOM_CODEBOOK_SCALE = 0.5


def as_mimi_config(config: MimiConfig | dict | str | os.PathLike | None) -> MimiConfig:
    if config is None:
        return mimi_202407()
    if isinstance(config, MimiConfig):
        return config
    if isinstance(config, dict):
        return MimiConfig.from_dict(config)
    return MimiConfig.from_json(hf_get(config))


def resolve_weights(weights: str | os.PathLike | None, hf_repo: str | None = None) -> tuple[Path, MimiConfig | None]:
    """(local checkpoint path, config named by the repo's config.json or None): see
    `weights.resolve.resolve_mimi`."""
    from .resolve import resolve_mimi

    return resolve_mimi(weights, hf_repo)


class _Shape(NamedTuple):
    """A tensor known by its header alone: what `check_published` reads of it."""

    shape: tuple[int, ...]


def build_mimi(weights: dict, cfg: MimiConfig, num_codebooks: int, source: str) -> Mimi:
    """Our-layout numpy weights -> a ready Mimi (CPU-friendly layouts, evaluated)."""
    _check_num_codebooks(num_codebooks, cfg)
    model = Mimi(cfg, num_codebooks=num_codebooks)
    try:
        model.load_weights([(k, mx.array(v)) for k, v in weights.items()], strict=True)
    except ValueError as e:  # a mapping bug, not user input: still one clear line
        raise WeightsError(f"{source}: weights do not fit the Mimi model: {e}") from None
    column_major_linears(model)
    mx.eval(model.parameters())
    return model


def load_mimi(
    weights: str | os.PathLike | None = None,
    num_codebooks: int = MIMI_CODEBOOKS,
    *,
    hf_repo: str | None = None,
    config: MimiConfig | dict | str | os.PathLike | None = None,
    backend: str = "mlx",
):
    """Load the published Mimi (PyTorch layout), the audio codec, for MLX or rustymimi.

    Args:
        weights: A local path, `hf://owner/repo/file`, `"random"` (seeded random weights:
            the codec then produces noise), or None for the file named by `hf_repo`'s
            config.json (`mimi_name`, default kyutai/moshiko-mlx-q8).
        num_codebooks: How many codebooks the codec encodes and decodes.
        hf_repo: The Hub repo whose config.json names the Mimi file.
        config: A MimiConfig, a dict or a config path (default: the repo's, else the
            published Mimi's; rustymimi takes only the published one).
        backend: "mlx" or "rustymimi".

    Returns:
        The codec for `backend`.

    Raises:
        UsageError: An unknown backend or a missing file.
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown Mimi backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if weights is not None and str(weights) == "random":
        return random_mimi(num_codebooks=num_codebooks, config=config, backend=backend)
    path, repo_cfg = resolve_weights(weights, hf_repo)
    f = SafetensorsFile(path, gguf=mimi_gguf_instead())  # a truncated or foreign file: one line for either backend
    if backend == "rustymimi":
        if config is not None:
            raise UsageError("the rustymimi backend only supports the published Mimi config")
        from ..models.mimi_rust import RustyMimi

        # rustymimi reads the file itself and names a bad one in Rust's words ('cannot find
        # tensor encoder...', 'HeaderTooLarge'): the header's names and shapes are checked here
        published = check_published({k: _Shape(f.shape(k)) for k in f.keys()}, mimi_202407(), str(path))
        if set(published) != set(f.tensors) or f.stored_names:
            # rustymimi reads the names in the file: a DDP / torch.compile fine-tune's, or
            # PyTorch's in-memory aliases, are given to it in a copy under the published ones
            import tempfile

            from .mimi_keys import canonical_name
            from .safetensors_io import save_safetensors

            with tempfile.TemporaryDirectory(prefix="moshi_mlx_mimi_") as tmp:
                copy = Path(tmp) / "mimi.safetensors"
                save_safetensors(
                    copy, {canonical_name(k): f.load(k) for k in f.keys() if canonical_name(k) in published}
                )
                return RustyMimi(copy, num_codebooks=num_codebooks)  # rustymimi reads it all now
        return RustyMimi(path, num_codebooks=num_codebooks)
    cfg = as_mimi_config(config) if config is not None else (repo_cfg or mimi_202407())
    ours = to_model_weights(f.load_all(), cfg, source=str(path))
    return build_mimi(ours, cfg, num_codebooks, str(path))


def random_mimi(
    seed: int = 0,
    num_codebooks: int = MIMI_CODEBOOKS,
    *,
    config: MimiConfig | dict | str | os.PathLike | None = None,
    codebook_scale: float = RANDOM_CODEBOOK_SCALE,
    backend: str = "mlx",
):
    """A Mimi of the real architecture with seeded random weights. It produces NOISE: use it
    to exercise code paths offline, never to listen to."""
    from ..validation import seed as check_seed

    cfg = as_mimi_config(config)
    published = random_published_weights(cfg, seed=check_seed("seed", seed), codebook_scale=codebook_scale)
    if backend == "rustymimi":
        import tempfile

        from ..models.mimi_rust import RustyMimi
        from .safetensors_io import save_safetensors

        if config is not None and as_mimi_config(config) != mimi_202407():
            raise UsageError("the rustymimi backend only supports the published Mimi config")
        with tempfile.TemporaryDirectory(prefix="moshi_mlx_random_mimi_") as tmp:
            path = Path(tmp) / "mimi.safetensors"
            save_safetensors(path, {k: mx.array(v) for k, v in published.items()})
            return RustyMimi(path, num_codebooks=num_codebooks)  # rustymimi reads it all now
    return build_mimi(to_model_weights(published, cfg, "random Mimi"), cfg, num_codebooks, "random Mimi")


def _check_num_codebooks(n: int, cfg: MimiConfig) -> None:
    q = cfg.quantizer
    if not isinstance(n, int) or not q.n_q_semantic <= n <= q.n_q:
        raise UsageError(f"num_codebooks must be an integer between {q.n_q_semantic} and {q.n_q}, got {n!r}")
