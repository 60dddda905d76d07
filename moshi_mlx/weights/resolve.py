"""The one resolver: which files make up a model, from what a caller named.

Every entry point (`moshi_mlx.load`, the run CLIs' flags, `load_lm_from_hub`, convert's
SOURCE/--hf-repo, `load_mimi`) goes through `resolve_model` / `resolve_mimi`, so they share one
set of defaults and one order of lookups:

- *where* the files are: a Hub repo id, or a local folder standing in for one (the folder
  of a local weights file counts, so a downloaded or converted model never asks the Hub);
  with nothing given, the default preset's repo for the quantization asked for (`-q`).
- the config: the caller's (LmConfig, preset name, config.json path, or a name in the repo),
  else the repo's/folder's config.json, else the preset known for the repo, else the preset
  whose architecture fits the weights' tensor shapes exactly.
- the weights: the caller's file/folder/name, else the file of that quantization for a
  known repo, else the config's `moshi_name`, else `model.safetensors`.
- Mimi and the text tokenizer: the caller's, else the names in the config, else the
  published names, looked up where the weights are.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..constants import CONFIG_NAME, DEFAULT_PRESET, LM_NAME, MIMI_NAME, MIMI_REPO, TOKENIZER_NAME
from ..errors import ConfigError, UsageError
from ..models.config import PRESETS, LmConfig, preset, preset_for_repo
from .errors import WeightsError
from .hub import hf_get, hf_get_optional

QUANT_FORMATS = {None: "bf16", 8: "q8", 4: "q4"}


@dataclass
class ModelFiles:
    """What `resolve_model` found: the config, the local weights path, and where the
    companion files (Mimi, tokenizer) are looked up."""

    cfg: LmConfig
    weights: Path
    how: str  # where the config came from, for logs
    where: str  # Hub repo id or local folder: the lookup place of the companion files
    model_dir: Path | None = None  # set when the weights came from a model folder with its config.json
    mimi: str | None = None  # spec of the Mimi checkpoint (a path, a name in `where`, or "random")
    tokenizer: str | None = None  # spec of the tokenizer, or "none" (ids shown as ‹id›)

    @property
    def repo(self) -> str | None:
        """The Hub repo id, None for a local folder."""
        return None if Path(self.where).expanduser().is_dir() else self.where

    def get(self, name: str) -> Path:
        return hf_get(name, self.where)


def default_repo(quantized: int | None = None, name: str = DEFAULT_PRESET) -> tuple[str, str]:
    """(Hub repo, weights file) of preset `name` at the quantization asked for (None: bf16)."""
    if quantized not in QUANT_FORMATS:
        raise UsageError(f"quantized must be 4, 8 or None (bf16), got {quantized!r}")
    repos = PRESETS[name][1]
    fmt = QUANT_FORMATS[quantized]
    if fmt not in repos:
        have = ", ".join(k for k in repos if k != "pytorch") or "none"
        raise UsageError(f"preset {name!r} has no {fmt} repo on the Hub (published: {have})")
    return repos[fmt]


def config_from(spec: LmConfig | str | os.PathLike, where: str | None = None) -> tuple[LmConfig, str]:
    """An LmConfig from a config, a preset name, a config.json path, or a name in `where`."""
    if isinstance(spec, LmConfig):
        return spec, spec.source or "given config"
    s = str(spec)
    if s in PRESETS:
        return preset(s), f"preset {s}"
    if s.endswith(".json") or os.sep in s or Path(s).expanduser().exists():
        path = hf_get(s, where)
        return LmConfig.from_json(path), str(path)
    raise ConfigError(f"unknown config {s!r}: expected a config.json path or a preset ({', '.join(PRESETS)})")


def match_preset(weights: Path) -> str | None:
    """The first preset whose architecture fits the file's tensor names and shapes exactly."""
    from ..models.lm import Lm
    from .lm_keys import is_pytorch_layout
    from .lm_loader import match_sources
    from .safetensors_io import SafetensorsFile

    f = SafetensorsFile(weights)
    pytorch = is_pytorch_layout(f.keys())
    for name in PRESETS:
        cfg = preset(name)
        try:
            match_sources(cfg, f, Lm(cfg), pytorch)  # Lm(cfg) is lazy: nothing is allocated
        except WeightsError:
            continue
        return name
    return None


def _candidates(folder: Path, cfg: LmConfig | None) -> list[str]:
    skip = {cfg.mimi_name} if cfg is not None and cfg.mimi_name else set()
    return sorted(n.name for n in folder.glob("*.safetensors") if n.name not in skip and not n.name.startswith("tokenizer"))


def _folder_weights(folder: Path, cfg: LmConfig | None) -> Path:
    if cfg is not None and cfg.moshi_name and (folder / cfg.moshi_name).is_file():
        return folder / cfg.moshi_name
    if cfg is not None and cfg.moshi_name and (folder / CONFIG_NAME).is_file() and cfg.moshi_name != LM_NAME:
        raise WeightsError(f"{folder / CONFIG_NAME} names the weights {cfg.moshi_name!r}, which is not in {folder}")
    names = _candidates(folder, cfg)
    if len(names) != 1:
        raise WeightsError(f"{folder} should hold one .safetensors model file, found {', '.join(names) or 'none'}"
                           + ("; set moshi_name in its config.json" if names else ""))
    return folder / names[0]


def _local_config(folder: Path, weights: Path | None) -> tuple[LmConfig, str]:
    if (folder / CONFIG_NAME).is_file():
        return LmConfig.from_json(folder / CONFIG_NAME), str(folder / CONFIG_NAME)
    w = weights if weights is not None else _folder_weights(folder, None)
    name = match_preset(w)
    if name is None:
        raise ConfigError(f"no config for {w.name}: no {CONFIG_NAME} beside it and its shapes fit no preset "
                          f"({', '.join(PRESETS)}); pass a config (--lm-config / --config)")
    return preset(name), f"preset {name} (matched by tensor shapes)"


def _hub_config(repo: str) -> tuple[LmConfig, str]:
    cfg_file = hf_get_optional(CONFIG_NAME, repo)
    if cfg_file is not None:
        return LmConfig.from_json(cfg_file), f"{repo}/{CONFIG_NAME}"
    known = preset_for_repo(repo)
    if known is not None:
        return preset(known[0]), f"preset {known[0]}"
    raise ConfigError(f"Hugging Face repo {repo!r} has no {CONFIG_NAME} and is not a known preset; pass a config "
                      f"(--lm-config / --config)")


def _hub_weights_name(repo: str, cfg: LmConfig, quantized: int | None, repo_given: bool) -> str:
    known = preset_for_repo(repo)
    if known is not None and cfg.moshi_name in (None, LM_NAME):
        return known[1]
    if quantized is not None and not repo_given:
        return default_repo(quantized)[1]
    return cfg.moshi_name or LM_NAME


def resolve_model(source: str | os.PathLike | None = None, *, weights: str | os.PathLike | None = None,
                  config: LmConfig | str | os.PathLike | None = None, mimi: str | os.PathLike | None = None,
                  tokenizer: str | os.PathLike | None = None, quantized: int | None = None) -> ModelFiles:
    """Find a model's files (see the module docstring for the order of lookups).

    source: a Hub repo id, a local model folder, a local weights file, or a preset name (its
      Hub repo for `quantized`); None: the default preset's repo for `quantized`.
    weights: the LM weights (a local file or folder, or a file name in the repo).
    config / mimi / tokenizer: override what the repo or folder says ("random" Mimi and
      "none" tokenizer are passed through for the loader).
    quantized: 4 or 8 picks the repo and file of that quantization (the file's own
      quantization is always what is loaded)."""
    if quantized not in QUANT_FORMATS:
        raise UsageError(f"quantized must be 4, 8 or None (bf16), got {quantized!r}")
    repo_given = source is not None
    if source is not None and str(source) in PRESETS and not Path(str(source)).exists():
        source = default_repo(quantized, str(source))[0]
    local_source = Path(source).expanduser() if source is not None and Path(source).expanduser().exists() else None
    if local_source is not None and local_source.is_file():
        if weights is not None:
            raise UsageError(f"{source} is a weights file: give it as the source or as weights, not with both")
        source, weights, local_source = None, local_source, None
    w_path = Path(weights).expanduser() if weights is not None and Path(weights).expanduser().exists() else None
    if local_source is not None:
        where = str(local_source)
    elif source is not None:
        where = str(source)
    elif w_path is not None:  # a local weights file or folder stands in for the repo
        where = str(w_path if w_path.is_dir() else w_path.parent)
    else:
        where = default_repo(quantized)[0]
    folder = Path(where).expanduser() if Path(where).expanduser().is_dir() else None

    # ---- the config
    model_dir = None
    if config is not None:
        cfg, how = config_from(config, where)
    elif w_path is not None and w_path.is_dir():
        cfg, how = _local_config(w_path, None)
    elif w_path is not None and (w_path.parent / CONFIG_NAME).is_file():
        cfg, how = LmConfig.from_json(w_path.parent / CONFIG_NAME), str(w_path.parent / CONFIG_NAME)
    elif w_path is not None:
        cfg, how = _local_config(w_path.parent, w_path)
    elif folder is not None:
        cfg, how = _local_config(folder, hf_get(weights, where) if weights is not None else None)
    else:
        cfg, how = _hub_config(where)

    # ---- the weights
    if w_path is not None:
        path = _folder_weights(w_path, cfg) if w_path.is_dir() else w_path
        if w_path.is_dir() and config is None and (w_path / CONFIG_NAME).is_file():
            model_dir = w_path
    elif weights is not None:
        path = hf_get(weights, where)
    elif folder is not None:
        path = _folder_weights(folder, cfg)
        if config is None and (folder / CONFIG_NAME).is_file():
            model_dir = folder
    else:
        path = hf_get(_hub_weights_name(where, cfg, quantized, repo_given), where)

    mimi_spec = str(mimi) if mimi is not None else (cfg.mimi_name or MIMI_NAME)
    tok_spec = str(tokenizer) if tokenizer is not None else (cfg.tokenizer_name or TOKENIZER_NAME)
    return ModelFiles(cfg, Path(path), how, where, model_dir, mimi_spec, tok_spec)


def resolve_mimi(weights: str | os.PathLike | None = None, repo: str | None = None):
    """(local Mimi checkpoint, the Mimi config the repo's config.json names or None):
    `weights` (a path, hf:// spec, or a name in `repo`), else the file the repo's config.json
    names (`mimi_name`), else the published name; `repo` defaults to `MIMI_REPO`."""
    from ..models.mimi_config import MimiConfig

    repo = repo or MIMI_REPO
    if weights is not None:
        return hf_get(weights, repo=repo), None
    name, cfg = MIMI_NAME, None
    cfg_path = hf_get_optional(CONFIG_NAME, repo)
    if cfg_path is not None:
        try:
            raw = json.loads(Path(cfg_path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{CONFIG_NAME} of {repo} is not valid JSON: {e}") from None
        name = raw.get("mimi_name") or name
        if raw.get("mimi_config_name"):
            cfg = MimiConfig.from_json(hf_get(raw["mimi_config_name"], repo=repo))
    return hf_get(name, repo=repo), cfg


__all__ = ["ModelFiles", "resolve_model", "resolve_mimi", "default_repo", "config_from", "match_preset"]
