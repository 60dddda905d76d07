"""The compute format of a loaded LM, chosen per backend (the weights file stays as it is).

What is fast differs by backend. Measured on MLX 0.32's Linux CPU backend (this machine,
2 cores; an 8192 x 4096 mat-vec, bench/floor.py; GB/s, and weights/s in brackets):

| weights | activations | one stream | two streams |
|---|---|---|---|
| q8 / q4 (affine, bf16 scales) | bf16 | 0.17 / 0.10 (0.16 G / 0.16 G) | 0.33 / 0.18 |
| q8 / q4 (affine, bf16 scales) | fp32 | 1.53 / 0.87 (1.44 G / 1.39 G) | 2.91 / 1.68 |
| bf16 | bf16 | 2.84 (1.42 G) | 6.04 |
| bf16 | fp32 | 0.87 (0.43 G) | 1.50 |
| fp32 | fp32 | 7.77 (1.94 G) | 15.10 |

So on a CPU:
- quantized models run with float32 activations (upstream's bf16 recipe takes MLX's scalar
  path, ~9x slower);
- bf16/fp16 Linear weights get float32 copies where memory allows (a quarter of the
  memory available at load, depformer first: its many small bf16 mat-vecs stream at only
  2.3 GB/s against 8.2 for fp32); the rest compute in their own dtype (a cast of the
  activation vector around a bf16 layer costs nothing; bf16 x fp32 takes the slow mixed
  path);
- the mat-vecs are split over two cores (`modules/parallel.py`).
On Metal (and CUDA) bf16 activations are the fast path (the matmuls' dtype, even where the
norms are stored in float32) and the weights stay as they are; the frame step is compiled
and the RMSNorms take bf16 directly (`RMSNorm.fused`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field
from typing import Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .frame_step import compiled_step_supported
from ..modules.embedding import StackedEmbeddings
from ..modules.norm import set_fused_norms
from ..modules.step_linear import StepLinear
from ..modules.parallel import (
    CastLinear,
    ParallelLinear,
    ParallelQuantizedLinear,
    cpu_count,
    set_linear_class,
    use_step_linears,
    worth_splitting,
)

ACTIVATIONS = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}


@dataclass
class ComputeFormat:
    """How an LM computes, beside its parameters: what `prepare_lm` chose (for logs and
    benchmark reports) and what a generator needs to follow it (`activation`, `compiled`,
    `audio_stack`). `LmGen(lm, compute=fmt)` runs it; the default instance is the model
    as stored, stepped eagerly (`ComputeFormat(compiled=True)`: as stored, compiled step)."""

    device: str = "default device"
    activation_dtype: str = "stored"  # for reports: the dtype the activations end up in
    parallel_linears: int = 0
    cast_linears: int = 0
    upcast: list[str] = field(default_factory=list)  # groups given float32 weight copies
    upcast_bytes: int = 0
    compiled: bool = False  # the frame step runs compiled fixed-shape functions
    profile: str = "cpu"
    fused_norms: int = 0  # RMSNorms fed bf16/fp16 directly (modules/norm.py)
    wired_bytes: int = 0  # Metal: the wired limit that keeps the weights resident (`wired_limit`)
    memory_warning: str | None = None  # the weights do not fit what the GPU keeps resident
    # the dtype embeddings are cast to (every layer after computes in its input's); None: the weights'
    activation: mx.Dtype | None = field(default=None, repr=False, compare=False)
    # the audio embedding tables as one gather, for the compiled step (None: one lookup per table)
    audio_stack: StackedEmbeddings | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        s = f"{self.activation_dtype} activations on {self.device}"
        if self.profile != ("cpu" if "cpu" in self.device else "gpu"):
            s += f" ({self.profile} format)"
        if self.compiled:
            s += ", compiled frame step"
        if self.fused_norms and self.activation_dtype in ("bfloat16", "float16"):
            s += ", fused norms"
        if self.upcast:
            s += f", float32 weights for {' + '.join(self.upcast)} (+{self.upcast_bytes / 2**30:.1f} GB)"
        if self.parallel_linears:
            s += f", {self.parallel_linears} mat-vecs split over 2 cores"
        if self.wired_bytes:
            s += f", weights kept resident (wired limit {self.wired_bytes / 2**30:.1f} GB)"
        return s


# above this share of Metal's recommended working set the weights will not all stay resident
RESIDENT_SHARE = 0.9


def parameter_bytes(*modules: nn.Module) -> int:
    """Bytes of the distinct arrays among the modules' parameters (shared ones counted once)."""
    seen: dict[int, int] = {}
    for m in modules:
        for _, a in tree_flatten(m.parameters()):
            seen[id(a)] = a.nbytes
    return sum(seen.values())


def resident_target(weight_bytes: int) -> tuple[int, str | None]:
    """On Metal, the wired limit that keeps the weights resident: the GPU's recommended
    working set (macOS would otherwise page them out between steps, which stalls a
    real-time frame). Returns (that limit in bytes, a one-line warning when the weights take
    more than 90% of it, where steps will stall whatever the limit). Elsewhere: (0, None).
    Nothing is set here: `wired_limit` holds it while a model is in use."""
    if not mx.metal.is_available():
        return 0, None
    info = mx.device_info()
    target = int(info.get("max_recommended_working_set_size", 0))
    if target <= 0:
        return 0, None
    warning = None
    if weight_bytes > RESIDENT_SHARE * target:
        warning = (
            f"the weights take {weight_bytes / 2**30:.1f} GB but this GPU keeps at most "
            f"{target / 2**30:.1f} GB resident: steps will stall on paging; a smaller "
            "quantization fits (-q 8, or -q 4 for Moshi 7B in ~4.3 GB)"
        )
    return target, warning


_WIRED_LOCK = threading.Lock()
_WIRED: dict[str, int] = {"holders": 0, "saved": 0}


@contextlib.contextmanager
def wired_limit(target: int) -> Iterator[None]:
    """Hold MLX's wired limit at `target` bytes (at least; never lower what is set) for the
    `with` block, then give the limit back as it was before the first holder, as mlx-lm's
    `generate.wired_limit` does: a process that loads a model does not keep the machine's
    memory wired after it. Nested or concurrent holders (two models) share it: the limit is
    restored when the last one leaves. `target` 0 (no Metal, the CPU format) does nothing."""
    if target <= 0 or not mx.metal.is_available():
        yield
        return
    with _WIRED_LOCK:
        old = mx.set_wired_limit(target)
        if old > target:  # someone asked for more already: keep theirs
            mx.set_wired_limit(old)
        if _WIRED["holders"] == 0:
            _WIRED["saved"] = old
        _WIRED["holders"] += 1
    try:
        yield
    finally:
        with _WIRED_LOCK:
            _WIRED["holders"] -= 1
            if _WIRED["holders"] == 0:
                mx.synchronize()  # nothing in flight relies on the wired pages any more
                mx.set_wired_limit(_WIRED["saved"])


def hold_wired_limit(owner: object, target: int):
    """`wired_limit(target)` for as long as `owner` lives: entered now, left when the
    returned function is called (e.g. `Model.close()`), when `owner` is collected, or at
    interpreter exit, whichever comes first."""
    stack = contextlib.ExitStack()
    stack.enter_context(wired_limit(target))
    return weakref.finalize(owner, stack.close)


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules())


def float_weight_dtype(model: nn.Module) -> mx.Dtype | None:
    """dtype of the float Linear weights (the first one found), None if there are none."""
    for _, m in model.named_modules():
        if isinstance(m, nn.Linear) and mx.issubdtype(m.weight.dtype, mx.floating):
            return m.weight.dtype
    return None


def matmul_dtype(model: nn.Module) -> mx.Dtype | None:
    """The dtype the model's matmuls compute in: its float Linears' weights, or else its
    quantized Linears' scales (MLX's quantized matmul computes in those); None if neither
    is a float dtype (fp8/fp4 modes keep uint8 scales)."""
    dt = float_weight_dtype(model)
    if dt is None:
        dt = next((m.scales.dtype for _, m in model.named_modules() if isinstance(m, nn.QuantizedLinear)), None)
    return dt if dt is not None and mx.issubdtype(dt, mx.floating) else None


def default_activation_dtype(model: nn.Module, device: mx.Device | None = None) -> mx.Dtype | None:
    """float32 for a quantized model on a CPU. On a GPU the 16-bit dtype its matmuls compute
    in, whatever dtype the norms were stored in: a checkpoint with float32 norms would
    otherwise run every activation, KV cache and quantized mat-vec in float32 there.
    Otherwise None (the weights' own dtype)."""
    device = device or mx.default_device()
    if device.type == mx.DeviceType.cpu:
        return mx.float32 if is_quantized(model) else None
    dt = matmul_dtype(model)
    return dt if dt in (mx.bfloat16, mx.float16) else None


def mem_available() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


# (group, which module paths): depformer first, its fp32 copy buys the most time per byte
# (its mat-vecs are small and MLX's bf16 kernel is slowest there: 2.3 GB/s vs 8.2 for fp32)
_UPCAST_GROUPS = (
    ("depformer", lambda p: p.startswith("depformer.")),
    ("temporal", lambda p: not p.startswith("depformer.")),
)


def _upcast_candidates(lm, in_group) -> list[nn.Linear]:
    return [
        m
        for p, m in lm.named_modules()
        if isinstance(m, nn.Linear)
        and m.weight.dtype in (mx.bfloat16, mx.float16)
        and in_group(p)
        and not p.startswith(("condition_provider", "extra_heads"))
    ]


def _distinct(arrays) -> list[mx.array]:
    """Each array object once (depformer slices of a schedule share theirs)."""
    return list({id(a): a for a in arrays}.values())


def upcast_extra_bytes(lm) -> dict[str, int]:
    """Extra memory a float32 copy of each group's bf16/fp16 Linear weights would take
    (a weight several modules share is copied once, so counted once)."""
    return {
        name: sum(w.size * (4 - w.itemsize) for w in _distinct(m.weight for m in _upcast_candidates(lm, in_group)))
        for name, in_group in _UPCAST_GROUPS
    }


def plan_upcast(extra: dict[str, int], budget_bytes: int) -> list[str]:
    """The groups to upcast, in order (depformer first), while the total fits the budget."""
    chosen, used = [], 0
    for name, _ in _UPCAST_GROUPS:
        n = extra.get(name, 0)
        if n == 0:
            continue
        if used + n > budget_bytes:
            break
        chosen.append(name)
        used += n
    return chosen


def upcast_float_linears(lm, groups) -> int:
    """Give the bf16/fp16 Linear weights of `groups` float32 copies; returns the extra bytes.
    Modules sharing a weight (or bias) array get one copy, shared again."""
    mods = [m for name, in_group in _UPCAST_GROUPS if name in groups for m in _upcast_candidates(lm, in_group)]
    arrays = [m[k] for m in mods for k in ("weight", "bias") if k in m]
    users: dict[int, int] = {}
    for a in arrays:
        users[id(a)] = users.get(id(a), 0) + 1
    copies: dict[int, mx.array] = {}  # id(original) -> its float32 copy, while a module holding it is to come
    used = 0
    for m in mods:
        for k in ("weight", "bias"):
            if k not in m or id(m[k]) not in users:  # (a module listed twice is done already)
                continue
            a = m[k]
            c = copies.get(id(a))
            if c is None:
                c = a.astype(mx.float32)
                mx.eval(c)
                if k == "weight":
                    used += a.size * (4 - a.itemsize)
            users[id(a)] -= 1
            if users[id(a)]:
                copies[id(a)] = c  # `a` stays alive (a later module holds it): its id stays unique
            else:
                del users[id(a)]
                copies.pop(id(a), None)
            m[k] = c
    return used


PROFILES = ("auto", "cpu", "gpu")


def prepare_lm(
    lm,
    activation: str | mx.Dtype | None = "auto",
    parallel: bool | str = "auto",
    upcast: bool | str | tuple | list = "auto",
    upcast_budget: int | None = None,
    profile: str = "auto",
    compile: bool | str = "auto",
) -> ComputeFormat:
    """Put `lm` in the compute format of the default device, in place (the file is
    untouched), and return it as a `ComputeFormat`: the module swaps (split, cast, fused,
    upcast layers) are done here; the activation dtype and the compiled step are the
    returned format's, for `LmGen(lm, compute=fmt)` (the module keeps only parameters).

    profile: "auto" (the default device's kind), "cpu" or "gpu": which backend's format the
      "auto" choices below follow. "gpu" on a CPU runs the accelerator path there (used to
      measure its host overhead and to test it without a GPU).
    compile: "auto" (with the gpu format), True or False: run the frame step as compiled
      fixed-shape functions (`models/frame_step.py`: a few fused kernels instead of
      thousands of small ones; what a GPU needs). The CPU format splits mat-vecs over two
      streams instead, which a trace does not carry, so "auto" leaves it eager there.

    activation: "auto" (float32 for quantized models on a CPU, or when every float layer
      was upcast; else the weights' dtype), "stored" / None (the weights' dtype), or a
      dtype / its name.
    parallel: "auto" (on a CPU with >= 2 cores), True or False: split mat-vecs of at
      least ~1M weights (float and quantized) over two CPU streams.
    upcast: "auto" (on a CPU), True or False: give bf16/fp16 Linear weights float32
      copies (depformer first, then the rest) while the extra memory stays within
      `upcast_budget` bytes (default: a quarter of the memory available now); or the
      groups to upcast ("depformer", "temporal"). On this CPU an fp32 mat-vec streams
      2.5-3.5x the bytes/s of a bf16 one, i.e. 1.3-1.8x the weights/s. Quantized weights
      are never expanded (their size is why they were chosen)."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    device = mx.default_device()
    cpu = device.type == mx.DeviceType.cpu if profile == "auto" else profile == "cpu"
    if cpu:  # back from an accelerator format: plain Linears first (the CPU's own arithmetic)
        set_linear_class(lm, nn.Linear, lambda _, m: type(m) is StepLinear)
    upcast_groups, upcast_bytes = [], 0
    if isinstance(upcast, (tuple, list)):
        upcast_groups = [g for g, _ in _UPCAST_GROUPS if g in upcast]
        unknown = set(upcast) - set(upcast_groups)
        if unknown:
            raise ValueError(f"unknown upcast group(s) {sorted(unknown)}; groups: depformer, temporal")
    elif upcast == "auto" and cpu or upcast is True:
        if upcast_budget is None:
            avail = mem_available()
            upcast_budget = 0 if avail is None else avail // 4
        upcast_groups = plan_upcast(upcast_extra_bytes(lm), upcast_budget)
    if upcast_groups:
        upcast_bytes = upcast_float_linears(lm, upcast_groups)
    if activation == "auto":
        act = default_activation_dtype(lm, mx.Device(mx.cpu if cpu else mx.gpu))  # the profile's device kind
        if (
            act is None
            and upcast_groups
            and all(n == 0 or g in upcast_groups for g, n in upcast_extra_bytes(lm).items())
        ):
            act = mx.float32  # every float layer is fp32 now
    elif activation in (None, "stored"):
        act = None
    elif isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation dtype {activation!r}; expected auto, stored or one of {', '.join(ACTIVATIONS)}"
            )
        act = ACTIVATIONS[activation]
    else:
        act = activation
    if parallel == "auto":
        parallel = cpu and cpu_count() >= 2
    n_par = n_cast = 0
    if parallel and cpu:
        n_par = set_linear_class(lm, ParallelLinear, _parallel_ok)
        n_par += set_linear_class(lm, ParallelQuantizedLinear, lambda _, m: worth_splitting(m))
        mx.eval(lm.parameters())
    # float layers whose weights differ from the activations compute in their own dtype
    if act is not None:
        n_cast = set_linear_class(lm, CastLinear, lambda _, m: type(m) is nn.Linear and m.weight.dtype != act)
    # the accelerator format: bf16/fp16 norms go to the fused kernel without float32 casts
    norms = set_fused_norms(lm, on=not cpu)
    fused = 0 if cpu else norms
    if not cpu:  # compiled or not, the accelerator format computes the same way (StepLinear.add_to)
        use_step_linears(lm)
    if compile == "auto":
        compile = not cpu
    compiled = bool(compile) and compiled_step_supported(lm) is None
    stack = StackedEmbeddings(lm.audio_embs) if compiled and StackedEmbeddings.stackable(lm.audio_embs) else None
    wired, warning = resident_target(parameter_bytes(lm)) if not cpu else (0, None)
    return ComputeFormat(
        str(device.type).rsplit(".", 1)[-1],  # 'cpu' or 'gpu', not MLX's 'Device(cpu, 0)'
        str(act if act is not None else lm.dtype).replace("mlx.core.", ""),
        n_par,
        n_cast,
        upcast_groups,
        upcast_bytes,
        compiled,
        "cpu" if cpu else "gpu",
        fused,
        wired,
        warning,
        activation=act,
        audio_stack=stack,
    )


# id(weight) -> (weak refs to it and to its row-contiguous copy), so that Linears sharing a
# weight (depformer slices of a schedule) share the copy too
_CONTIGUOUS: dict[int, tuple[weakref.ref, weakref.ref]] = {}


def _shared_contiguous(w: mx.array) -> mx.array:
    hit = _CONTIGUOUS.get(id(w))
    if hit is not None and hit[0]() is w:
        c = hit[1]()
        if c is not None:
            return c
    c = mx.contiguous(w)
    for k in [k for k, (a, b) in _CONTIGUOUS.items() if a() is None or b() is None]:
        del _CONTIGUOUS[k]
    _CONTIGUOUS[id(w)] = (weakref.ref(w), weakref.ref(c))
    return c


def _parallel_ok(path: str, m: nn.Linear) -> bool:
    if not worth_splitting(m):
        return False
    # the halves must be row-contiguous views (a column-major weight, or a slice of a
    # stacked tensor, is re-laid out once; once per distinct weight)
    m.weight = _shared_contiguous(m.weight)
    return True


def prepare_mimi(mimi, profile: str = "auto", compile: bool | str = "auto") -> bool:
    """Mimi's compute format: on a GPU (profile "gpu", or "auto" there) its streaming steps
    run as compiled fixed-shape functions (`models/mimi_step.py`); on a CPU they stay eager
    (there the live loop prefers rustymimi anyway, `models.mimi.best_backend`). Returns
    whether the step is compiled. `Mimi` applies it when built."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    gpu = mx.default_device().type == mx.DeviceType.gpu if profile == "auto" else profile == "gpu"
    mimi.compiled_step = bool(gpu if compile == "auto" else compile)
    if mimi.compiled_step:
        use_step_linears(mimi)  # no transpose node per Linear in the traces
    return mimi.compiled_step
