"""Streaming conversion of an LM checkpoint (PyTorch or MLX layout, float) to an MLX model
folder: float in any dtype, or quantized uniformly or by a recipe.

Memory stays near one source tensor plus its converted form: the output layout (names,
dtypes, shapes) is known before any tensor is read, so the header is written first and
tensors follow one at a time in the source file's order, each read from a memory map,
converted, written and freed. A 15 GB bf16 7B checkpoint therefore converts in a few GB.
The folder (config.json + `model.q4.safetensors` / `model.q8.safetensors` / ...) loads
with `load_lm(folder)`; the weights are written under a temporary name and renamed last,
so an interrupted conversion never leaves a loadable half file.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx

from ..constants import LM_NAME
from ..errors import UsageError
from ..models.config import PRESETS, LmConfig, companion_files, preset
from ..models.lm import Lm
from ..errors import Error
from ..outputs import PARTIAL_SUFFIX, Staged, os_error, signals_held
from .errors import WeightsError
from .lm_keys import Source, is_pytorch_layout
from .hub import cached, download_command, hf_get_optional
from .lora import with_lora
from .pytorch_int8 import dequantized
from .lm_loader import _load_source, _quant_spec, is_quantized_file, match_sources
from .model_dir import CONFIG_NAME, QuantRecord, config_text, describe_spec
from .resolve import resolve_model
from .quantize import FP_MODES, GROUP_SIZES, QuantSpec, in_features, quantizable_modules
from .recipes import Recipe
from .safetensors_io import SafetensorsFile, SafetensorsWriter, mx_to_safetensors_dtype, open_checkpoint

FLOAT_DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}
STORED_DTYPE = "bfloat16"  # what the float tensors are written in unless told (moshi-convert --weights-dtype)
_FLOATS = (mx.float32, mx.float16, mx.bfloat16)


# ---- finding the source and its config ------------------------------------------------


@dataclass
class SourceInfo:
    weights: Path
    cfg: LmConfig
    how: str  # where the config came from, for the log
    asset_dir: Path | None = None  # folder that may hold the Mimi / tokenizer files
    repo: str | None = None  # Hub repo that may hold them
    lora: Path | None = None  # a LoRA fine-tune's adapters, fused into `weights` before converting


def resolve_source(
    source: str | os.PathLike | None = None,
    *,
    hf_repo: str | None = None,
    config: LmConfig | str | os.PathLike | None = None,
    lora: str | os.PathLike | None = None,
) -> SourceInfo:
    """The weights file and config to convert: a model folder (with or without a config.json:
    a local copy of a published repo has none), a file (config: `config`, else a config.json
    beside it, else the preset its shapes fit), a Hub repo (`hf_repo`, SOURCE then a file name
    in it; or SOURCE itself: a repo id, hf://owner/name[/file], a file's Hub address) — found by
    the one resolver, `weights.resolve.resolve_model`;
    `lora`: a fine-tune's adapters (default: those its config.json names beside it)."""
    if source is None and hf_repo is None:
        raise UsageError("nothing to convert: give a SOURCE file or folder, or --hf-repo")
    if hf_repo is not None and Path(hf_repo).expanduser().is_dir() and source is None:
        source, hf_repo = hf_repo, None
    if hf_repo is not None:
        files = resolve_model(hf_repo, weights=source, config=config, lora=lora)
        return SourceInfo(files.weights, files.cfg, files.how, repo=hf_repo, lora=files.adapters)
    path = Path(source).expanduser()
    if not path.exists():  # a Hub repo id, hf://owner/name[/file], a file's Hub address: as loading takes them
        files = resolve_model(str(source), config=config, lora=lora)
        local = files.repo is None
        return SourceInfo(
            files.weights, files.cfg, files.how, files.weights.parent if local else None, files.repo, files.adapters
        )
    files = resolve_model(
        weights=path, config=config, lora=lora
    )  # a fine-tune's adapters: found beside its config.json
    return SourceInfo(files.weights, files.cfg, files.how, files.weights.parent, lora=files.adapters)


# ---- the plan: every output tensor, known before reading any -----------------------------


@dataclass
class OutTensor:
    name: str
    st_dtype: str
    shape: tuple[int, ...]
    param: str  # the float model parameter it comes from
    part: str  # "float", or "weight" / "scales" / "biases" of a quantized module


@dataclass
class Plan:
    cfg: LmConfig
    f: SafetensorsFile
    sources: dict[str, Source]
    quant: dict[str, QuantSpec | None]  # every quantizable module path -> spec (None = float)
    dtype: mx.Dtype
    recipe: Recipe | None
    outputs: list[OutTensor] = field(default_factory=list)
    param_counts: dict[str, int] = field(default_factory=dict)

    @property
    def quantized(self) -> bool:
        return any(q is not None for q in self.quant.values())

    def record(self) -> QuantRecord | None:
        if not self.quantized:
            return None
        return QuantRecord.from_plan(self.quant, self.param_counts, self.recipe.name if self.recipe else None)

    def weights_name(self) -> str:
        """`model.q4.safetensors` / `model.q8.safetensors` for uniform affine (the published
        names), `model.<mode>...` for the fp modes, `model.<recipe>...` for the others."""
        if not self.quantized:
            return LM_NAME
        name = self.recipe.name if self.recipe else "uniform"
        if name.startswith("mixed-"):
            return f"model.{name}.safetensors"
        q = next(q for q in self.quant.values() if q is not None)  # the other recipes use one spec
        stem = f"q{q.bits}" if q.mode == "affine" else q.mode
        return f"model.{stem}.safetensors" if name == "uniform" else f"model.{stem}-{name}.safetensors"

    def source_bytes(self, out: OutTensor) -> int:
        src = self.sources[out.param]
        return self.f.nbytes(src.key) // src.chunks if out.part in ("float", "weight") else 0


def plan_conversion(
    f: SafetensorsFile, cfg: LmConfig, recipe: Recipe | None = None, dtype: mx.Dtype = FLOAT_DTYPES[STORED_DTYPE]
) -> Plan:
    """Check the source and the recipe, and lay out every output tensor."""
    name = f.path.name
    f = dequantized(f, dtype)  # a PyTorch int8 file (quantize: true) converts from its float values
    keys = f.keys()
    if is_quantized_file(f):
        try:
            what = describe_spec(_quant_spec(Lm(cfg), f, False))
        except WeightsError:
            what = "packed weights with scales"
        raise WeightsError(
            f"{name} is already quantized ({what}); convert from a float (bf16/fp16/fp32) checkpoint instead"
        )
    model = Lm(cfg)  # lazy: only names and shapes are used
    pytorch = is_pytorch_layout(keys)
    expected, sources = match_sources(cfg, f, model, pytorch)
    for k in expected:
        if f.dtype(sources[k].key) not in ("F32", "F16", "BF16", "F64"):
            raise WeightsError(
                f"{name}: tensor {sources[k].key} has dtype {f.dtype(sources[k].key)}, expected a float checkpoint"
            )
    mods = quantizable_modules(model)
    quant: dict[str, QuantSpec | None] = {}
    for path, m in sorted(mods.items()):
        q = recipe(path) if recipe is not None else None
        if q is not None and in_features(m) % q.group_size:
            width = in_features(m)
            fits = [g for g in FP_MODES.get(q.mode, (None, GROUP_SIZES))[1] if width % g == 0]
            raise WeightsError(
                f"{path}: its input width {width} is not divisible by the group size {q.group_size}"
                + (
                    f"; group sizes that divide it: {', '.join(map(str, fits))}"
                    if fits
                    else "; no supported group size divides it (use a recipe that keeps it float)"
                )
            )
        quant[path] = q
    plan = Plan(cfg, f, sources, quant, dtype, recipe)
    plan.param_counts = {p: int(m.weight.size) for p, m in mods.items()}
    st_float = mx_to_safetensors_dtype(dtype)
    offsets = {k: f.tensors[k]["offsets"][0] for k in keys}
    order = sorted(expected, key=lambda k: (offsets[sources[k].key], sources[k].index, k))
    for k in order:
        path, leaf = k.rsplit(".", 1) if "." in k else ("", k)
        q = quant.get(path)
        shape = expected[k]
        if q is not None and leaf == "weight":
            rows, width = shape
            plan.outputs.append(OutTensor(k, "U32", (rows, width * q.bits // 32), k, "weight"))
            scale_dtype = st_float if q.mode == "affine" else "U8"
            plan.outputs.append(OutTensor(f"{path}.scales", scale_dtype, (rows, width // q.group_size), k, "scales"))
            if q.mode == "affine":
                plan.outputs.append(OutTensor(f"{path}.biases", st_float, (rows, width // q.group_size), k, "biases"))
        else:
            keep32 = k.startswith("condition_provider.")  # like the loader: conditioners stay float32
            plan.outputs.append(OutTensor(k, "F32" if keep32 else st_float, shape, k, "float"))
    return plan


def _groups(plan: Plan) -> list[tuple[int, int, tuple]]:
    """(first output index, output count, what it is computed from) for each float tensor
    or quantized module of the plan; equal keys give equal values."""
    out, i = [], 0
    while i < len(plan.outputs):
        o = plan.outputs[i]
        src = plan.sources[o.param]
        if o.part == "float":
            out.append((i, 1, (src, mx.float32 if o.st_dtype == "F32" else plan.dtype)))
            i += 1
            continue
        n = 1
        while i + n < len(plan.outputs) and plan.outputs[i + n].param == o.param:
            n += 1
        out.append((i, n, (src, plan.quant[o.param.rsplit(".", 1)[0]])))
        i += n
    return out


def iter_converted(plan: Plan) -> Iterator[tuple[OutTensor, mx.array]]:
    """(output tensor, its evaluated value), in plan order, one source tensor in memory at a
    time. Outputs that repeat the one before (depformer slices sharing a tensor: the plan
    lays them out one after the other) are written again from the same arrays, not
    converted again."""
    groups = _groups(plan)
    uses: dict[str, int] = {}
    prev = None
    for _, _, key in groups:
        if key != prev:
            uses[key[0].key] = uses.get(key[0].key, 0) + 1
        prev = key
    cache: dict[str, mx.array] = {}
    prev, values = None, ()
    for i, n, key in groups:
        if key != prev:
            values = ()  # freed before the next read
            src, how = key
            arr = _load_source(plan.f, src, cache, uses)
            if n == 1 and plan.outputs[i].part == "float":
                values = (arr if arr.dtype == how else arr.astype(how),)
            else:
                values = tuple(
                    mx.quantize(
                        arr if arr.dtype == plan.dtype else arr.astype(plan.dtype),
                        how.group_size,
                        how.bits,
                        mode=how.mode,
                    )
                )
            del arr
            mx.eval(values)
            prev = key
        # the plan lays out weight, scales (, biases) of a module one after the other
        for j in range(n):
            yield plan.outputs[i + j], values[j]


# ---- the whole conversion -----------------------------------------------------------------


@dataclass
class ConvertResult:
    out_dir: Path
    weights: Path
    config: Path
    record: QuantRecord | None
    summary: str
    source_bytes: int
    out_bytes: int
    seconds: float
    copied: list[str]
    missing_assets: list[str]
    tensors: int

    def missing_note(self) -> str | None:
        """One line: the companion files loading the output needs and no source held, and
        how to add them (None when none is missing)."""
        if not self.missing_assets:
            return None
        how = []
        for n in self.missing_assets:
            repos = _published_repos(n)
            how.append(f"{download_command(repos[0], n)} --local-dir {self.out_dir}" if repos else f"copy {n} there")
        return (
            f"note: {self.out_dir} has no {', '.join(self.missing_assets)} (not beside the source nor in the "
            f"Hugging Face cache), which loading it needs: add {'it' if len(how) == 1 else 'them'} with "
            + "; ".join(how)
        )


def _prepare_out(out_dir: Path, names: list[str], force: bool, source: Path) -> list[Path]:
    """Check and create `out_dir`; returns the folders it created (deepest first), which a
    failed conversion removes again."""
    if out_dir.exists() and not out_dir.is_dir():
        raise WeightsError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise WeightsError(f"output folder {out_dir} already exists and is not empty; pass --force to overwrite")
    for n in names:
        if (out_dir / n).exists() and (out_dir / n).resolve() == source.resolve():
            raise WeightsError(f"the output {out_dir / n} would overwrite the source; choose another --out")
    created = []
    d = out_dir.absolute()
    while not d.exists() and d.parent != d:
        created.append(d)
        d = d.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    return created


QUALITY_NAME = "quality.json"  # where `--eval` saves its report in the folder unless told
# the weights file names `Plan.weights_name` gives (model.safetensors, model.q4.safetensors, ...)
_WEIGHTS_RE = re.compile(r"model(\.[^/]+)?\.safetensors")


def _earlier_files(out_dir: Path, keep: list[str], inputs: list[Path]) -> list[Path]:
    """The files of an earlier conversion in `out_dir` that this one does not write: other
    LM weights files (convert's names, and the one the old config.json names), the companion
    files only the old config names, an old `--eval` report (it describes the old weights)
    and the temporary files of an interrupted conversion. Removed once the new weights and
    config.json are in place, so the folder holds what a fresh conversion would: one weights
    file (two make a folder ambiguous to loaders that pick by name) and no stale report.
    Any other file in the folder is the user's and stays, and so does every input of this
    conversion (`inputs`: a source converted into its own folder through the API)."""
    if not out_dir.is_dir():
        return []
    owned = {QUALITY_NAME}
    raw = None
    with contextlib.suppress(OSError, ValueError):  # an old config.json of any shape: only its names are read
        raw = json.loads((out_dir / CONFIG_NAME).read_text(encoding="utf-8"))
    if isinstance(raw, dict) and isinstance(raw.get("moshi_name"), str):  # a model folder's config
        owned.add(raw["moshi_name"])
        with contextlib.suppress(Error, ValueError, TypeError, KeyError):
            owned.update(companion_files(LmConfig.from_dict(raw)))
    stale = []
    for p in sorted(out_dir.iterdir()):
        n = p.name
        partial = n.endswith(PARTIAL_SUFFIX)
        base = n[: -len(PARTIAL_SUFFIX)] if partial else n
        if partial and base.startswith("."):  # a `Staged` temporary: .NAME.XXXXXXXX.partial
            base = base[1:].rsplit(".", 1)[0]
        ours = base in owned or base == CONFIG_NAME or _WEIGHTS_RE.fullmatch(base) is not None
        if ours and (partial or base not in keep) and (p.is_file() or p.is_symlink()):
            if not any(_same_file(p, q) for q in inputs):
                stale.append(p)
    return stale


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _published_repos(name: str) -> list[str]:
    """The Hub repos of the published presets whose model folder holds companion file `name`."""
    repos = []
    for p, (_, formats) in PRESETS.items():
        if formats and name in companion_files(preset(p)):
            repos += [r for r, _ in formats.values() if r not in repos]
    return repos


def _cached_copy(name: str) -> Path | None:
    """`name` as the Hugging Face cache already holds it in a published repo (never asks the
    Hub): a source folder without its tokenizer often sits beside a cached download of it."""
    for repo in _published_repos(name):
        found = cached(repo, name)
        if isinstance(found, Path) and found.is_file():
            return found
    return None


def _copy_assets(info: SourceInfo, out_dir: Path, names: list[str]) -> tuple[list[str], list[str]]:
    copied, missing = [], []
    for n in names:
        dst = out_dir / n
        src = info.asset_dir / n if info.asset_dir is not None and (info.asset_dir / n).is_file() else None
        if src is None and info.repo is not None:
            try:
                src = hf_get_optional(n, info.repo)
            except WeightsError:
                src = None
        if src is None:
            src = _cached_copy(n)
        if src is None:
            if not dst.is_file():  # (one already in the output folder is kept as it is)
                missing.append(n)
            continue
        if not (dst.exists() and dst.resolve() == Path(src).resolve()):
            with Staged(dst) as staged:
                try:
                    shutil.copyfile(src, staged.temp)
                except OSError as e:
                    raise os_error(dst, e) from None
        copied.append(n)
    return copied, missing


def convert(
    info: SourceInfo,
    out_dir: str | os.PathLike,
    *,
    recipe: Recipe | None = None,
    dtype: mx.Dtype = FLOAT_DTYPES[STORED_DTYPE],
    force: bool = False,
    copy_assets: bool = True,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Convert `info.weights` into the model folder `out_dir`.

    progress(n): called with the source bytes consumed by each tensor; on_start(total)
    once with their total."""
    t0 = time.monotonic()
    out_dir = Path(out_dir).expanduser()
    source = open_checkpoint(info.weights)  # (a sharded checkpoint's shards are beside its index)
    f = with_lora(source, info.lora, info.cfg, dtype)
    plan = plan_conversion(f, info.cfg, recipe, dtype)
    wname = plan.weights_name()
    # the files loading the output looks for: the config's names, else its family's defaults
    # (a config.json naming no tokenizer still loads one), and PersonaPlex's voice presets
    assets = companion_files(info.cfg) if copy_assets else []
    created = _prepare_out(out_dir, [wname, CONFIG_NAME] + assets, force, info.weights)
    # read now, while config.json is still the old one
    inputs = [info.weights, *([info.lora] if info.lora else [])]
    inputs += [f.path for f in getattr(source, "shards", {}).values()]  # a sharded checkpoint's shards
    stale = _earlier_files(out_dir, [wname, CONFIG_NAME] + companion_files(info.cfg), inputs)
    record = plan.record()
    total = sum(plan.source_bytes(o) for o in plan.outputs)
    if on_start is not None:
        on_start(total)
    meta = {"format": "mlx"}
    if record is not None:
        meta["quantization"] = json.dumps(record.to_json(), separators=(",", ":"))
    final = out_dir / wname
    layout = {o.name: (o.st_dtype, o.shape) for o in plan.outputs}
    old_limit = mx.set_cache_limit(0)  # freed buffers go back to the OS at once: RSS stays ~1 tensor
    weights: Staged | None = None
    cfg_staged: Staged | None = None
    try:
        # a Staged temporary (not NAME.partial of our own): one a signal leaves on the way out,
        # after this block, is removed by the runner (outputs.remove_unfinished)
        weights = Staged(final)
        with SafetensorsWriter(weights.temp, layout, meta) as w:
            for o, arr in iter_converted(plan):
                w.write(o.name, arr)
                if progress is not None:
                    progress(plan.source_bytes(o))
                del arr
        # config.json is written (under a temporary name) before either file is renamed: a disk
        # too full for it must not leave new weights beside an old config, or without one
        cfg_staged = Staged(out_dir / CONFIG_NAME)
        try:
            # the adapters are in the weights now, and int8 weights were dequantized
            fused = replace(info.cfg, lora=False, lora_name=None, quantize=False)
            cfg_staged.temp.write_text(config_text(fused, wname, record), encoding="utf-8")
        except OSError as e:
            raise os_error(cfg_staged.path, e) from None
    except BaseException as e:
        if weights is not None:
            weights.discard()
        if cfg_staged is not None:
            cfg_staged.discard()
        for d in created:  # folders this conversion made (deepest first), when still empty
            with contextlib.suppress(OSError):
                d.rmdir()
        if isinstance(e, OSError) and not isinstance(e, Error):  # disk full, file size limit, ...
            raise os_error(final, e) from None
        raise
    finally:
        mx.set_cache_limit(old_limit)
    with signals_held():  # both or neither: new weights beside the old config.json may not fit it
        weights.commit()
        cfg_path = cfg_staged.commit()
        for p in stale:  # the earlier conversion's files, only now that the new ones are in place
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    copied, missing = _copy_assets(info, out_dir, assets) if copy_assets else ([], [])
    summary = describe_spec(plan.quant) if plan.quantized else f"float ({mx_to_safetensors_dtype(dtype)})"
    return ConvertResult(
        out_dir,
        final,
        cfg_path,
        record,
        summary,
        source.size,
        final.stat().st_size,
        time.monotonic() - t0,
        copied,
        missing,
        len(plan.outputs),
    )
