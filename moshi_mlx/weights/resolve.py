"""The one resolver: which files make up a model, and what they hold, from what a caller named.

Every entry point (`moshi_mlx.load`, the run CLIs' flags, convert's SOURCE/--hf-repo, the TTS
and STT loaders, `load_mimi`) goes through `resolve_model` / `resolve_mimi`. It reads top to
bottom, each step once:

1. *where*: a Hub repo id, or a local folder standing in for one (the folder of a local
   weights file counts, so a downloaded or converted model never asks the Hub); with nothing
   given, the default preset's repo for the quantization asked for (`-q`).
2. the weights file: the caller's file/folder/name, else the file of that quantization for a
   known repo (`PRESETS`), else the repo config's `moshi_name`, else `model.safetensors`
   (`model.q4.safetensors` & co., upstream's names, for `-q` with an unknown repo).
3. the config: the caller's (LmConfig, preset name, config.json path, or a name in the repo),
   else the repo's/folder's config.json when it is a Moshi LM config, else the preset known
   for the repo; the caller's `check` may refuse it here, before the weights are downloaded.
4. the weights' header, read once (`SafetensorsFile`: names, shapes, dtypes; no tensor
   data); with no config yet, the preset whose architecture fits it (quantized or not).
5. the fit (`lm_loader.fit`): layout, per-module quantization and the tensor of every
   parameter, decided from the header for that config; the loader builds from it.
6. Mimi and the text tokenizer: the caller's, else the names in the config, else the
   published names, looked up where the weights are.

Files come from the Hugging Face cache exactly as huggingface_hub leaves it, with or without
its `.no_exist` records, offline or with no network (`weights.hub`); a config.json the cache
does not hold is then simply absent, and the steps above fall through to the preset or the
shapes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

from ..constants import CONFIG_NAME, DEFAULT_PRESET, LM_NAME, LORA_NAME, MIMI_NAME, MIMI_REPO
from ..errors import ConfigError, UsageError
from ..validation import json_file
from ..models.config import IGNORES_REPO_CONFIG, PRESETS, LmConfig, companion_names, preset, presets_for_repo
from .errors import WeightsError
from .hub import (
    broken_link,
    cache_only,
    cached,
    download_command,
    hf_get,
    hf_get_optional,
    hub_file_spec,
    is_repo_id,
    present,
    repo_file,
    repo_files,
    repo_id,
    web_address,
)
from .lora import adapters_only, lora_files, with_lora
from .pytorch_int8 import dequantized
from .safetensors_io import (
    GGUF_SUFFIX,
    INDEX_SUFFIX,
    SAVE_AS_SAFETENSORS,
    SafetensorsFile,
    ShardedSafetensors,
    gguf_instead,
    mimi_gguf_instead,
    open_checkpoint,
    shard_names,
)

QUANT_FORMATS = {None: "bf16", 8: "q8", 6: "q6", 4: "q4"}
STT_MIMI_NAME = "mimi-pytorch-e351c8d8@125.safetensors"  # the published Mimi's name in the STT repos
# keys of a Moshi LM config.json: one with fewer than two of them belongs to something else
# (a Transformers-style config; DistilBERT's has `dim` alone) and is not read as one
_LM_KEYS = ("dim", "num_layers", "num_heads", "n_q", "card", "text_card", "delays")
# the config keys that shape the network's tensors and that every published config.json
# gives (the depformer's: where it has one); others are options, or None meaning 'inherit'
_SHAPE_KEYS = ("dim", "num_heads", "num_layers", "hidden_scale", "norm", "gating", "text_card", "n_q", "dep_q", "card")
_DEPFORMER_SHAPE_KEYS = ("depformer_dim", "depformer_multi_linear", "depformer_weights_per_step")
# what a weights file's name ends with: such a spec is a file (or a name in a repo), never a repo id
WEIGHTS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".gguf")
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")  # torch.save's checkpoints


@dataclass
class ModelFiles:
    """What `resolve_model` found: the config, the local weights path with its header and
    fit, and where the companion files (Mimi, tokenizer) are looked up."""

    cfg: LmConfig
    weights: Path
    how: str  # where the config came from, for logs
    where: str  # Hub repo id or local folder: the lookup place of the companion files
    mimi: str | None = None  # spec of the Mimi checkpoint (a path, a name in `where`, or "random")
    tokenizer: str | None = None  # spec of the tokenizer, or "none" (ids shown as ‹id›)
    checkpoint: object = None  # the weights' SafetensorsFile (header read once)
    fit: object = None  # lm_loader.LmFit: what the loader builds
    adapters: Path | None = None  # a LoRA fine-tune's adapters, fused into the checkpoint as read
    mimi_note: str | None = None  # where the Mimi came from when not from `where` (`companion`), for logs
    named: tuple[str, ...] = ()  # the companions' names that came from the config or preset, not the caller

    def source(self, dtype=None):
        """The checkpoint as the model reads it: LoRA adapters fused, PyTorch int8 dequantized
        (in `dtype` where those compute one)."""
        return dequantized(with_lora(self.checkpoint, self.adapters, self.cfg, dtype), dtype)

    @property
    def repo(self) -> str | None:
        """The Hub repo id, None for a local folder."""
        return None if Path(self.where).expanduser().is_dir() else self.where

    def stored_format(self) -> str:
        """How the weights file stores the LM, from its header: '8-bit affine g64', 'bf16',
        'int8 (PyTorch)', or each quantization with its module count when they differ; a
        LoRA fine-tune's adapters said too (the loaded-model line of every tool)."""
        from collections import Counter

        from .model_dir import describe_spec
        from .pytorch_int8 import is_int8_file

        quant = getattr(self.fit, "quant", None) or {}
        if self.checkpoint is not None and is_int8_file(self.checkpoint):
            s = "int8 (PyTorch)"
        elif len({q.describe() for q in quant.values()}) == 1:
            s = next(iter(quant.values())).describe()
        elif quant:
            s = describe_spec(quant)
        elif self.checkpoint is not None and len(self.checkpoint):
            dtypes = Counter(self.checkpoint.dtype(k) for k in self.checkpoint.keys())
            s = _DTYPE_NAMES.get(dtypes.most_common(1)[0][0], dtypes.most_common(1)[0][0].lower())
        else:
            s = "format unknown"
        return s + (f", LoRA {self.adapters.name} fused" if self.adapters is not None else "")

    def get(self, name: str) -> Path:
        """A companion file: a spec the caller gave as they gave it (a path, relative to the
        working directory, or hf://...); a bare name from the config or preset in `where`
        only: a file of that name in the working directory is not the repo's."""
        if name in self.named and Path(name).name == name:
            return repo_file(self.where, name)
        return hf_get(name, self.where)

    def companion(self, kind: str) -> Path:
        """The local path of the Mimi checkpoint (`kind` "mimi") or the text tokenizer
        ("tokenizer"), looked up where the weights are. Missing from a local folder, it is
        named with what it is and how to give it: a fine-tune's or a copied weights file's
        folder often lacks them, and the Mimi's published name
        (tokenizer-e351c8d8-checkpoint125.safetensors) does not say it is the codec."""
        name = _not_gguf_mimi(self.mimi) if kind == "mimi" else self.tokenizer
        try:
            return self.get(name)
        except WeightsError:
            if self.repo is not None and self.how.startswith("preset") and Path(name).name == name:
                # a name from the preset: the repo's config.json may name another (not cached)
                elsewhere = _named_otherwise(self.repo, name, True, kind)
                if elsewhere is not None:
                    raise elsewhere from None
            if kind == "mimi" and self.repo is not None and name in _PUBLISHED_MIMI and cache_only():
                # the published Mimi, cached under another repo (offline): the same file, as moshi-mimi takes it
                other = _published_mimi_cached(name)
                if other is not None:
                    self.mimi_note = (
                        f"{other[1].name} from {other[0]}, the same published file: {self.repo}'s is not in the cache"
                    )
                    return other[1]
            if self.repo is not None or Path(name).name != name or (Path(self.where) / name).is_symlink():
                raise  # the cache's line, a path given, or a broken link
            what, flag = _COMPANIONS[kind]
            raise WeightsError(
                f"{self.where} has no {name} ({what}): put it there, pass its path ({flag}), or take "
                f"it from the repo the weights come from (--hf-repo REPO --moshi-weight {self.weights})"
            ) from None


# safetensors' dtype names as the tools say them (`ModelFiles.stored_format`)
_DTYPE_NAMES = {"BF16": "bf16", "F16": "float16", "F32": "float32"}

# what a companion file is, and how a caller gives it (ModelFiles.companion)
_COMPANIONS = {
    "mimi": ("the Mimi codec checkpoint", "--mimi-weight, or mimi= in load()"),
    "tokenizer": ("the text tokenizer", "--tokenizer, or tokenizer= in load()"),
}


# ---- presets and repos ----------------------------------------------------------------------


def _fmt(quantized: int | None) -> str:
    if quantized not in QUANT_FORMATS:
        raise UsageError(f"quantized must be 4, 6, 8 or None (bf16), got {quantized!r}")
    return QUANT_FORMATS[quantized]


def default_repo(quantized: int | None = None, name: str = DEFAULT_PRESET) -> tuple[str, str]:
    """(Hub repo, weights file) of preset `name` at the quantization asked for (None: bf16)."""
    fmt = _fmt(quantized)
    repos = PRESETS[name][1]
    if fmt == "bf16" and fmt not in repos and "pytorch" in repos:  # published in PyTorch's layout only
        fmt = "pytorch"
    if fmt not in repos:
        have = ", ".join(k for k in repos if k != "pytorch") or "none"
        raise UsageError(f"preset {name!r} has no {fmt} weights on the Hub (published: {have})")
    return repos[fmt]


def _repo_weights_name(repo: str, raw: dict | None, quantized: int | None) -> str:
    """The weights file of a Hub repo: the one of the quantization asked for when the repo is
    known (one line naming the right repo when it holds no such file), else the config's."""
    known = {fmt: name for _, fmt, name in presets_for_repo(repo)}
    named = (raw or {}).get("moshi_name")
    if quantized is None:
        if named:
            return named
        return known.get("bf16") or known.get("pytorch") or next(iter(known.values()), LM_NAME)
    fmt = _fmt(quantized)
    if fmt in known:
        return known[fmt]
    if known:
        elsewhere = [f"{PRESETS[p][1][fmt][0]}" for p, _, _ in presets_for_repo(repo) if fmt in PRESETS[p][1]]
        hint = f"; the {fmt} weights are in {elsewhere[0]}" if elsewhere else ""
        raise UsageError(f"{repo} holds {', '.join(sorted(known))} weights, not {fmt}{hint}")
    return named if named and f".{fmt}." in named else f"model.{fmt}.safetensors"


def _cached_instead(repo: str, name: str) -> str:
    """A note for a known repo's weights missing from the cache while another format of the
    same model is there (a user who ran `-q 4` once, offline now without it)."""
    for preset_name, _, _ in presets_for_repo(repo)[:1]:
        for fmt, (other, fname) in PRESETS[preset_name][1].items():
            same_repo = other.lower() == repo.lower()  # (repo ids are read whatever their capitals)
            if not (same_repo and fname == name) and isinstance(cached(other, fname), Path):
                if not same_repo:  # -q alone would pick the default model's repo
                    return f" ({other} is in the cache: --hf-repo {other}, or load({other!r}))"
                # in load()'s words; the tools print `-q 4` / `without -q` (cli/flag_words.py)
                return f" ({fname} is in the cache: quantized={fmt[1:] if fmt.startswith('q') else None})"
    return ""


# ---- configs --------------------------------------------------------------------------------


class GivenConfig(NamedTuple):
    """A config the caller named, with where it came from: `how` for logs only, `home` as the
    place the files it names (a LoRA fine-tune's adapters) are looked up."""

    cfg: LmConfig
    how: str
    home: str | None  # the config.json's local folder, or its Hub repo / hf:// folder; None: no file


def config_from(spec: LmConfig | str | os.PathLike, where: str | None = None) -> GivenConfig:
    """An LmConfig from a config, a preset name, a config.json path, or a name in `where`."""
    if isinstance(spec, LmConfig):
        return GivenConfig(spec, spec.source or "given config", None)
    s = str(spec)
    if s in PRESETS:
        return GivenConfig(preset(s), f"preset {s}", None)
    if s.endswith(".json") or os.sep in s or Path(s).expanduser().exists():
        path = hf_get(s, where)
        if s.startswith("hf://"):  # its folder in the repo, from where the adapters download too
            home = s.rsplit("/", 1)[0]
        elif Path(s).expanduser().exists():
            home = str(path.parent)
        else:  # a name in the repo or folder `where`
            home = where
        return GivenConfig(LmConfig.from_json(path), str(path), home)
    raise ConfigError(f"unknown config {s!r}: expected a config.json path or a preset ({', '.join(PRESETS)})")


def _read_json(path: Path) -> dict | None:
    """A config.json as a dict, or None when it is not a Moshi LM config (see `_LM_KEYS`)."""
    try:
        raw = json_file(path)
    except (OSError, ValueError) as e:  # json's JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{path} is not valid JSON: {e}".splitlines()[0]) from None
    if not isinstance(raw, dict) or sum(k in raw for k in _LM_KEYS) < 2:
        return None
    return raw


def match_preset(f: SafetensorsFile) -> str | None:
    """The first preset whose architecture fits the file's header exactly: tensor names and
    shapes, float or quantized at any bits / group size / mix (`lm_loader.fit`)."""
    from .lm_loader import fit

    for name in PRESETS:
        try:
            fit(preset(name), f)  # Lm(cfg) is lazy: nothing is allocated
        except WeightsError:
            continue
        return name
    return None


def _detect(f: SafetensorsFile, foreign: Path | None = None) -> tuple[LmConfig, str]:
    """The preset the header fits; `foreign`: the config.json beside the weights that is not a
    Moshi LM config (named in the refusal: a Transformers one says what it is)."""
    name = match_preset(f)
    if name is None:
        beside, how = f"no {CONFIG_NAME} beside it", "pass a config (--lm-config / --config)"
        if foreign is not None:
            beside, how = _foreign_config(foreign)
        raise ConfigError(
            f"no config for {f.path.name}: {beside} and its tensors fit no preset ({', '.join(PRESETS)}); {how}"
        )
    return preset(name), f"preset {name} (matched by tensor shapes)"


# a Transformers config's model_type -> the presets of the models published in Kyutai's layout
_TRANSFORMERS_MODELS = {"moshi": ("moshiko", "moshika"), "kyutai_speech_to_text": ("stt-1b-en_fr", "stt-2.6b-en")}


def _foreign_config(path: Path) -> tuple[str, str]:
    """(what the config.json at `path`, not a Moshi LM config, is; what to do) for `_detect`'s
    line. A Hugging Face Transformers checkpoint (kmhf/hf-moshiko's MoshiForConditionalGeneration,
    kyutai/stt-*-trfs: other tensor names, the Mimi inside) is not read here: Kyutai's layout of
    the model is."""
    try:
        raw = json_file(path)
    except (OSError, ValueError):
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    arch = raw.get("architectures")
    if "transformers_version" not in raw and not arch:
        return f"{path} is not a Moshi LM config", "pass a config (--lm-config / --config)"
    kind = arch[0] if isinstance(arch, list) and arch else f"model_type {raw.get('model_type')!r}"
    how = "Transformers' checkpoints are not read here"
    same = _TRANSFORMERS_MODELS.get(raw.get("model_type"), ())
    if same:  # kmhf/hf-moshiko, kyutai/stt-*-trfs: the model is published in Kyutai's layout too
        repos = [PRESETS[n][1]["pytorch"][0] for n in same]
        how += f": take the same model in Kyutai's layout ({', '.join(repos)}, or their -mlx- repos)"
    return f"{path} is a Hugging Face Transformers config ({kind}), not a Moshi LM config,", how


def _ignored_config_preset(f: SafetensorsFile) -> str | None:
    """The preset among those whose repo's config.json is not read (`IGNORES_REPO_CONFIG`)
    that the weights fit exactly, or None."""
    from .lm_loader import fit

    for name in sorted(IGNORES_REPO_CONFIG):
        try:
            fit(preset(name), dequantized(f))
        except WeightsError:
            continue
        return name
    return None


# ---- files ----------------------------------------------------------------------------------


def _cache_folder(folder: Path) -> Path:
    """A Hugging Face cache folder given where a model folder is expected (found by browsing
    ~/.cache/huggingface/hub): a repo's `models--owner--name` folder, or its `snapshots/`,
    stands for its main revision's snapshot (else the newest one holding weights); the cache
    itself is named as one, with the repo ids it holds. Any other folder is returned as is."""
    repo_dir = folder.parent if folder.name == "snapshots" else folder
    if repo_dir.name.startswith("models--") and (repo_dir / "snapshots").is_dir():
        ref = repo_dir / "refs" / "main"
        main = repo_dir / "snapshots" / ref.read_text().strip() if ref.is_file() else None
        snaps = sorted(
            (s for s in (repo_dir / "snapshots").iterdir() if s.is_dir()), key=lambda s: s.stat().st_mtime, reverse=True
        )
        for snap in ([main] if main is not None and main.is_dir() else []) + snaps:
            if any(snap.glob("*.safetensors")):
                return snap
        raise WeightsError(f"{folder} is a Hugging Face cache folder holding no weights file: download the repo again")
    repos = sorted(p.name[len("models--") :].replace("--", "/", 1) for p in folder.glob("models--*") if p.is_dir())
    if repos and not any(folder.glob("*.safetensors")):
        raise UsageError(
            f"{folder} is a Hugging Face cache, not a model folder: give a repo id it holds "
            f"({', '.join(repos[:3])}{', ...' if len(repos) > 3 else ''}) with HF_HUB_CACHE={folder}"
        )
    return folder


def _candidates_in(names: list[str]) -> list[str]:
    """The weights files among a repo's file names (`_candidates`' rule, without reading them)."""
    return [n for n in names if n.endswith((".safetensors", INDEX_SUFFIX)) and not n.startswith(("tokenizer", "mimi"))]


def _companions_in(names: list[str], kind: str) -> list[str]:
    """The Mimi checkpoints (`kind` "mimi": tokenizer-*/mimi-* .safetensors) or text tokenizers
    (SentencePiece .model) among a repo's file names."""
    if kind == "mimi":
        return [n for n in names if n.endswith(".safetensors") and n.startswith(("tokenizer", "mimi"))]
    return [n for n in names if n.endswith(".model")]


# what the config.json names, by kind of file (_named_otherwise's line)
_KINDS = {"weights": "weights file", "mimi": "Mimi checkpoint", "tokenizer": "text tokenizer"}


def _candidates(folder: Path, skip: set[str]) -> list[str]:
    """The folder's weights files: its .safetensors, a sharded checkpoint as its index
    (`model.safetensors.index.json`) in place of the shards it names."""
    indexes = sorted(n for n in folder.glob("*" + INDEX_SUFFIX) if n.name[: -len(INDEX_SUFFIX)] not in skip)
    for n in indexes:  # an index that cannot be read, with no file of its name beside it: its own line
        if not shard_names(n) and not (folder / n.name[: -len(INDEX_SUFFIX)]).is_file():
            ShardedSafetensors(n)  # raises: '... is not a shard index: ...' (else the shards were 'several files')
    shards = set().union(*(shard_names(n) for n in indexes))
    return sorted(
        [n.name for n in indexes if shard_names(n)]
        + [
            n.name
            for n in folder.glob("*.safetensors")
            if n.name not in skip | shards and not n.name.startswith(("tokenizer", "mimi"))
        ]
    )


def _other_formats(names: list[str], twin: str | None = None) -> str:
    """A note for a folder or repo without safetensors weights that holds a checkpoint in a
    format not read here: PyTorch pickles (a torch.save fine-tune), GGUF files (kyutai's
    -candle-q8 repos; `twin`: the repo of the same model in safetensors)."""
    pickles = sorted(n for n in names if n.endswith(_PICKLE_SUFFIXES))
    if pickles:
        return f" (it holds PyTorch pickles, {', '.join(pickles)}: {SAVE_AS_SAFETENSORS})"
    gguf = sorted(n for n in names if n.endswith(GGUF_SUFFIX))
    return f" (it holds GGUF files, {', '.join(gguf)}: {gguf_instead(twin)})" if gguf else ""


def _named_otherwise(repo: str, name: str, guessed: bool, kind: str = "weights") -> WeightsError | None:
    """The error for a Hub repo whose file `name` (its weights, or its "mimi" or "tokenizer":
    `kind`) is not there while the repo (the cache's snapshots, else the Hub's list) holds
    another of that kind: weights in a format not read here (candle's GGUF, pickles), or a
    file under another name that no config.json gave (`guessed`: the name is the preset's or
    the default): the repo's config.json is not in the cache (a download of some files), or
    the repo has none. None when neither applies (the usual line then)."""
    held = repo_files(repo)
    weights = _candidates_in(held) if kind == "weights" else _companions_in(held, kind)
    if not weights and kind == "weights":
        other = _other_formats(held, _safetensors_twin(repo))
        return WeightsError(f"{repo} holds no safetensors weights{other}") if other else None
    known = {fname for _, _, fname in presets_for_repo(repo)}  # another format's file: _cached_instead's note
    others = [n for n in weights if n not in {name, name + INDEX_SUFFIX} | known]
    if not guessed or not others or name in weights:
        return None
    if cache_only() and CONFIG_NAME not in held and cached(repo, CONFIG_NAME) is None:
        return WeightsError(
            f"{name} from {repo} is not in the local Hugging Face cache, which holds {', '.join(others)} of it but "
            f"not its {CONFIG_NAME}, which names the {_KINDS[kind]} to use: download it once online "
            f"({download_command(repo, CONFIG_NAME)}); a repo without one: give the file, hf://{repo}/{others[0]}"
        )
    if kind != "weights":  # the repo has no config.json: the file is given as any
        return None
    return WeightsError(
        f"{repo} has no {name} and no {CONFIG_NAME} naming its weights (it holds {', '.join(others)}): "
        f"give the file, hf://{repo}/{others[0]}"
    )


def _safetensors_twin(repo: str) -> str | None:
    """The published repo of the same model in safetensors for a -candle- repo of GGUF
    weights (kyutai/moshiko-candle-q8 -> kyutai/moshiko-mlx-q8), None when `PRESETS` has none."""
    twin = repo.replace("-candle-", "-mlx-")
    return f"{twin}, the same model in MLX's layout" if twin != repo and presets_for_repo(twin) else None


def _defaulted(raw: dict | None, cfg_file: Path | None) -> str:
    """A note for weights that do not fit a config.json lacking some of the keys that shape
    the network (a hand-written or trimmed one): their defaults were used, which is why."""
    if raw is None or cfg_file is None:
        return ""
    keys = _SHAPE_KEYS + (_DEPFORMER_SHAPE_KEYS if raw.get("dep_q", 1) else ())
    absent = [k for k in keys if k not in raw]
    return f" ({cfg_file} gives no {', '.join(absent)}: their defaults were used)" if absent else ""


def _source_config(where: str) -> Path | None:
    """The config.json of the repo or local folder `where`, None when it has none (or when
    its own loader never reads it: NVIDIA's does not read PersonaPlex's, its preset is the
    config)."""
    local = Path(where).expanduser()
    if local.is_dir():
        return local / CONFIG_NAME if present(local / CONFIG_NAME) else None
    if any(p in IGNORES_REPO_CONFIG for p, _, _ in presets_for_repo(where)):
        return None
    return hf_get_optional(CONFIG_NAME, where)


def _index_of(path: Path) -> Path:
    """A shard given as the weights file stands for its checkpoint: the index beside it (or in
    the folder above) that names it (one shard alone never fits a model)."""
    if path.name.endswith(".safetensors"):
        for up in (path.parent, path.parent.parent):  # (an index may keep its shards in a subfolder)
            for index in sorted(up.glob("*" + INDEX_SUFFIX)):
                if path.relative_to(up).as_posix() in shard_names(index):
                    return index
    return path


def _folder_weights(folder: Path, raw: dict | None, quantized: int | None) -> Path:
    """The LM weights in a local folder: the config's `moshi_name`, else the one candidate
    (`-q`: the one of that quantization, by upstream's `model.q4.safetensors` names)."""
    named = (raw or {}).get("moshi_name")
    if named and not (folder / named).is_file() and (folder / (named + INDEX_SUFFIX)).is_file():
        return folder / (named + INDEX_SUFFIX)  # saved sharded under that name
    if named and ((folder / named).is_file() or named != LM_NAME):  # the default name may stand for any
        if not (folder / named).is_file():
            raise WeightsError(f"{folder / CONFIG_NAME} names the weights {named!r}, which is not in {folder}")
        return folder / named
    skip = {(raw or {}).get("mimi_name") or MIMI_NAME, (raw or {}).get("lora_name") or LORA_NAME}
    names = _candidates(folder, skip)
    if not names and (raw or {}).get("lora"):
        lora_files(raw, folder, base_required=True)  # adapters without their base: one line naming what to pass
    if len(names) > 1:  # several formats side by side (Helium's repo, upstream's names): the one asked for

        def fmt_of(n: str) -> str | None:
            return next((f for f in QUANT_FORMATS.values() if f".{f}." in n or n.endswith(f"-{f}.safetensors")), None)

        want = _fmt(quantized)
        picked = [n for n in names if fmt_of(n) == want]
        if not picked and quantized is not None:  # -q 8 on a folder of the q4 and bf16 files
            raise UsageError(
                f"{folder} holds no {want} weights file (it holds {', '.join(names)}): drop quantized={quantized}, "
                "or pass the file"
            )
        names = picked or ([n for n in names if fmt_of(n) is None] if want == "bf16" else names)
    if len(names) != 1:
        interrupted = not names and any((folder / ".cache" / "huggingface" / "download").glob("*.incomplete"))
        raise WeightsError(
            f"{folder} should hold one .safetensors model file, found {', '.join(names) or 'none'}"
            + ("; set moshi_name in its config.json or pass the file" if names else "")
            + (" (a download into it was interrupted: run it again)" if interrupted else "")
            + ("" if names else _other_formats([p.name for p in folder.iterdir()]))
        )
    return folder / names[0]


def resolve_model(
    source: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | None = None,
    config: LmConfig | str | os.PathLike | None = None,
    mimi: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    quantized: int | None = None,
    lora: str | os.PathLike | None = None,
    check: Callable[[LmConfig], None] | None = None,
) -> ModelFiles:
    """Find a model's files and decide what they hold, before any weights are read.

    See the module docstring for the rules.

    Args:
        source: A Hub repo id, a local model folder, a local weights file, or a preset name
            (its Hub repo for `quantized`); None: the default preset's repo for `quantized`.
        weights: The LM weights (a local file or folder, or a file name in the repo).
        config: Overrides the config the repo or folder gives.
        mimi: Overrides the Mimi checkpoint ("random" is passed through for the loader).
        tokenizer: Overrides the tokenizer ("none" is passed through for the loader).
        quantized: 4, 6 or 8 picks the repo and file of that quantization (nothing is
            quantized at load: a file that holds no module at those bits is refused).
        lora: A LoRA fine-tune's adapters file, fused into the weights (default: the config's
            `lora_name` beside it, when the config says `lora: true`).
        check: Called with the config as soon as it is decided, before the weights file is
            read or downloaded when the config does not depend on it (given, config.json,
            a known repo's preset), else once its header is read: raise to refuse the model
            (a tool given the wrong kind says so before a download of GBs).

    Returns:
        The `ModelFiles` found: paths, config and what the weights hold.

    Raises:
        UsageError: A bad spec, a missing file, or files that do not fit together.
    """
    from .lm_loader import fit

    _fmt(quantized)
    # 1. where (a file's https://huggingface.co/owner/name/blob/main/FILE address is hf://owner/name/FILE)
    if source is not None and weights is None and not Path(source).expanduser().exists():
        spec = hub_file_spec(source)
        if spec.startswith("hf://") and spec.count("/") >= 4:  # a file, hf://owner/name/FILE
            source, weights = None, spec
        elif spec != str(source):  # a file of another revision, from the cache's snapshot of it
            source = spec
    weights = hub_file_spec(weights) if weights is not None else None
    if weights is not None and str(weights).startswith("hf://") and source is None:  # hf://owner/repo/file
        parts = str(weights)[len("hf://") :].split("/")
        if len(parts) < 3:
            raise UsageError(f"bad Hub spec {weights!r}: expected hf://owner/repo/path")
        source, weights = "/".join(parts[:2]), "/".join(parts[2:])
    if (
        source is None
        and weights is not None
        and not Path(weights).expanduser().exists()
        and not str(weights).endswith(WEIGHTS_SUFFIXES)
    ):
        spec = repo_id(str(weights))
        if is_repo_id(spec):  # a repo id where weights were expected (moshi-quality's MODEL, load_lm)
            source, weights = spec, None
        elif spec != str(weights):  # another revision's snapshot folder, in the cache
            weights = spec
    if source is not None and not Path(source).expanduser().exists():
        source = repo_id(str(source))  # "owner/name/" or its https://huggingface.co/ address
    for spec in (source, weights):  # another web address: one line, before any lookup
        url = web_address(spec) if spec is not None else None
        if url is not None:
            raise url
    if source is not None and str(source).endswith(WEIGHTS_SUFFIXES) and not Path(source).expanduser().exists():
        raise broken_link(source) or WeightsError(f"file not found: {source}")  # a file, not a repo id
    if source is not None and str(source) in PRESETS and not Path(str(source)).exists():
        source = default_repo(quantized, str(source))[0]
    local_source = Path(source).expanduser() if source is not None and Path(source).expanduser().exists() else None
    if local_source is not None and local_source.is_dir():
        local_source = _cache_folder(local_source)
    if local_source is not None and local_source.is_file():
        if weights is not None:
            raise UsageError(f"{source} is a weights file: give it as the source or as weights, not with both")
        source, weights, local_source = None, local_source, None
    w_path = Path(weights).expanduser() if weights is not None and Path(weights).expanduser().exists() else None
    if w_path is not None and w_path.is_dir():
        w_path = _cache_folder(w_path)
    if local_source is not None:
        where = str(local_source)
    elif source is not None:
        where = str(source)
    elif w_path is not None:  # a local weights file or folder stands in for the repo
        where = str(w_path if w_path.is_dir() else w_path.parent)
    else:
        where = default_repo(quantized)[0]
    folder = Path(where).expanduser() if Path(where).expanduser().is_dir() else None
    if w_path is not None and w_path.is_dir():
        folder = w_path

    # 2. the config the caller gave, else the config.json that travels with the weights
    #    (raw None: absent, or not a Moshi LM config), and the weights file
    given = config_from(config, where) if config is not None else None
    raw, cfg_file, cfg_home = None, None, where  # cfg_home: where the config.json came from
    if given is not None:
        named = given.cfg.moshi_name
        # a given config's weights name counts in a folder only where the folder holds it (the
        # config of the repo a folder's fine-tune came from names the repo's file)
        if named not in (None, LM_NAME) and (folder is None or (folder / named).is_file()):
            raw = {"moshi_name": named}
    elif w_path is not None or folder is not None:
        cfg_file = (w_path.parent if w_path is not None and w_path.is_file() else folder) / CONFIG_NAME
        cfg_home = str(cfg_file.parent)
        if not present(cfg_file) and source is not None:  # weights alone, given with their repo or folder
            try:
                cfg_file, cfg_home = _source_config(where), where
            except WeightsError:  # a gated repo, a token refused: the preset or the shapes decide, as before
                cfg_file = None
    else:
        cfg_file = _source_config(where)
    if cfg_file is not None and cfg_file.is_file():
        raw = _read_json(cfg_file)

    # 3. the config, where the weights' header is not needed to decide it: the caller's, the
    #    config.json's, else the preset known for the repo; `check` refuses it here, before a
    #    weights file is read or downloaded (GBs for a repo not cached)
    if given is not None:
        decided = (given.cfg, given.how)
    elif raw is not None:
        decided = (LmConfig.from_dict(raw, str(cfg_file)), str(cfg_file))
    else:
        known = presets_for_repo(where) if folder is None else []
        decided = (preset(known[0][0]), f"preset {known[0][0]}") if known else None
    if decided is not None and check is not None:
        check(decided[0])

    # 4. the weights file and its header, read once
    if w_path is not None and w_path.is_file():
        path = _index_of(w_path)
    elif weights is not None and w_path is None:
        if str(weights).endswith(GGUF_SUFFIX):  # refused by its name, before a download of GBs
            raise WeightsError(
                f"{weights} is a GGUF file, not a safetensors file: {gguf_instead(_safetensors_twin(where))}"
            )
        path = hf_get(weights, where)
    elif folder is not None:
        own = raw if cfg_home == str(folder) else {k: v for k, v in (raw or {}).items() if k != "moshi_name"}
        path = _folder_weights(folder, own, quantized)  # (another's config names its own weights file)
    else:
        name = _repo_weights_name(where, raw, quantized)
        try:  # the repo's file, never one of that name in the working directory (as `ModelFiles.get`)
            path = repo_file(where, name)
        except WeightsError as e:  # not cached: another format of the same model may be (or sharded)
            path = hf_get_optional(name + INDEX_SUFFIX, where) if name.endswith(".safetensors") else None
            if path is None and (raw or {}).get("lora"):  # moshi-finetune's consolidated/, pushed as a repo
                raise adapters_only(where, raw.get("lora_name") or LORA_NAME, f"hf://{where}/{CONFIG_NAME}", "repo")
            if path is None:
                raise _named_otherwise(where, name, (raw or {}).get("moshi_name") in (None, LM_NAME)) or WeightsError(
                    f"{e}{_cached_instead(where, name)}"
                ) from None

    # a sharded checkpoint's shards: from the repo its index came from (a path in it: never a
    # file of the working directory, and a subfolder's shard too), else beside the index
    from_repo = folder is None and w_path is None
    f = open_checkpoint(path, (lambda shard: repo_file(where, shard)) if from_repo else None)
    # ... else the preset whose architecture the header fits (checked now: it took the file)
    foreign = cfg_file if given is None and raw is None and cfg_file is not None and cfg_file.is_file() else None
    cfg, how = decided if decided is not None else _detect(f, foreign)
    if decided is None and check is not None:
        check(cfg)

    # 4b. a LoRA fine-tune (moshi-finetune's `lora: true`): its adapters, found beside the
    #     config.json that says so (a config object names no place: `lora` must be given)
    if lora is not None:
        try:
            adapters = hf_get(lora, where)
        except WeightsError as e:  # "file not found: x": say which file it was meant to be
            raise WeightsError(f"LoRA adapters: {e}") from None
    elif not cfg.lora:
        adapters = None
    else:
        home = None
        if given is not None:
            home = given.home
        elif cfg_file is not None:
            home = cfg_home
        if home is None:
            adapters = None  # with_lora says what to pass
        elif home.startswith("hf://"):
            adapters = hf_get(f"{home}/{cfg.lora_name or LORA_NAME}")
        elif Path(home).expanduser().is_dir():
            adapters = lora_files(cfg, home).adapters
        else:
            adapters = repo_file(home, cfg.lora_name or LORA_NAME)

    # 5. the fit: layout, quantization and the tensor of every parameter (a PyTorch int8 file,
    #    `quantize: true`, reads as its float weights)
    files = ModelFiles(cfg, Path(path), how, where, checkpoint=f, adapters=adapters)
    try:
        files.fit = fit(cfg, files.source())
    except WeightsError as e:
        ignored = _ignored_config_preset(f) if given is None and raw is not None else None
        if ignored is None:
            raise WeightsError(f"{e}{_defaulted(raw, cfg_file) if given is None else ''}") from None
        # a local copy of a repo whose config.json its own loader never reads (PersonaPlex,
        # `hf download ... --local-dir`): its tensors name the preset, as the repo id does on the Hub
        cfg = files.cfg = preset(ignored)
        files.how = f"preset {ignored} (matched by tensor shapes; {cfg_file} is not read, as NVIDIA's loader does not)"
        files.fit = fit(cfg, files.source())
        if check is not None:  # checked above on the config.json's, which this replaces
            check(cfg)
    held = sorted({q.bits for q in files.fit.quant.values()})
    if quantized is not None and quantized not in held:  # -q 8 on a folder/file of q4 weights
        raise UsageError(
            f"{path.name} holds {'/'.join(f'q{b}' for b in held) or 'float'} weights, not "
            f"q{quantized}: drop quantized={quantized} to load it as it is, or pass the q{quantized} file"
        )

    # 6. companions
    mimi_name, tokenizer_name = companion_names(cfg)
    files.mimi = str(mimi) if mimi is not None else mimi_name
    files.tokenizer = str(tokenizer) if tokenizer is not None else tokenizer_name
    files.named = tuple(name for name, given in ((mimi_name, mimi), (tokenizer_name, tokenizer)) if given is None)
    return files


def resolve_mimi(weights: str | os.PathLike | None = None, repo: str | None = None):
    """(local Mimi checkpoint, the Mimi config the repo's config.json names or None):
    `weights` (a path, hf:// spec, or a name in `repo`), else the file the repo's config.json
    names (`mimi_name`), else the published name; `repo` defaults to `MIMI_REPO`."""
    from ..models.mimi_config import MimiConfig

    named = repo is not None
    repo = repo or MIMI_REPO
    if weights is not None:
        return hf_get(_not_gguf_mimi(weights), repo=repo), None
    name, cfg = MIMI_NAME, None
    cfg_path = hf_get_optional(CONFIG_NAME, repo)
    if cfg_path is not None:
        try:
            raw = json_file(cfg_path)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{CONFIG_NAME} of {repo} is not valid JSON: {e}".splitlines()[0]) from None
        if isinstance(raw, dict):
            name = raw.get("mimi_name") or name
            if raw.get("mimi_config_name"):
                cfg = MimiConfig.from_json(repo_file(repo, raw["mimi_config_name"]))
    try:  # the repo's, never a file of that name in the working directory
        return repo_file(repo, name), cfg
    except WeightsError:
        other = None if named else _published_mimi_cached()
        if other is None:
            raise
        return other[1], None


def _not_gguf_mimi(spec: str | os.PathLike) -> str | os.PathLike:
    """`spec`, a Mimi checkpoint to fetch, refused by its name when it is a GGUF file not here
    yet (a -candle- repo's model.q8.gguf, GBs, given as the codec): before its download."""
    if str(spec).endswith(GGUF_SUFFIX) and not Path(spec).expanduser().exists():
        raise WeightsError(f"{spec} is a GGUF file, not a safetensors file: {mimi_gguf_instead()}")
    return spec


_PUBLISHED_MIMI = (MIMI_NAME, STT_MIMI_NAME)  # the published Mimi's two names (moshiko's, the STT repos')


def _published_mimi_cached(first: str = MIMI_NAME) -> tuple[str, Path] | None:
    """(repo, path) of the published Mimi (checkpoint e351c8d8, step 125) as the cache holds it
    in any known repo, under the name `first` first: every Moshi, Hibiki, TTS and STT repo
    ships the same file, so a repo's copy missing offline (only kyutai/moshiko-mlx-q4
    downloaded, or another model's weights alone) is no reason to fail. The one lookup of
    `resolve_mimi` (moshi-mimi, load_mimi) and of an LM's Mimi (`ModelFiles.companion`)."""
    repos = dict.fromkeys(r for _, repos in PRESETS.values() for r, _ in repos.values())
    for name in dict.fromkeys((first, *_PUBLISHED_MIMI)):
        for r in repos:
            hit = cached(r, name)
            if isinstance(hit, Path):
                return r, hit
    return None


__all__ = ["ModelFiles", "GivenConfig", "resolve_model", "resolve_mimi", "default_repo", "config_from", "match_preset"]
