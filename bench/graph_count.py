"""Count the primitives a frame step runs and time its host work, for any MLX code.

Standalone (imports only mlx and the stdlib), so the script run with upstream's package
uses the very same instrument.

MLX builds a lazy graph and runs it at a synchronisation: `mx.eval` / `mx.async_eval`, or
an implicit one (`.item()`, `.tolist()`, `bool(a)`, `int(a)`, `float(a)`, `np.array(a)`).
`SyncHooks` wraps every one of those entry points: before the real call it can export the
still-unevaluated graph behind the arrays (`mx.export_to_dot`) and count its primitive
nodes by type, and it times the call. Each primitive runs at exactly one synchronisation
(MLX detaches evaluated arrays from their graph), so the counts of all synchronisations of
a step add up to the primitives the step ran, whatever code built them.

What a count means depends on the device: on a CPU `mx.fast` ops (rms_norm, rope,
scaled_dot_product_attention) are built from several plain primitives, on a GPU they are
one each, and a compiled function's fused elementwise chains are one `Compiled` node.
"""

from __future__ import annotations

import io
import re
import time
from collections import Counter

import mlx.core as mx

_NODE = re.compile(r'\[label ="([^"]+)", shape=rectangle\]')
_ARRAY_METHODS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__array__")


# primitives that only re-describe memory (a view; at most a copy when the layout demands):
# on a GPU they launch no kernel of their own, the others do (each Compiled node is one kernel)
VIEW_PRIMITIVES = frozenset(
    {
        "Transpose",
        "Reshape",
        "Slice",
        "ExpandDims",
        "Squeeze",
        "Broadcast",
        "Split",
        "Flatten",
        "Unflatten",
        "AsStrided",
        "StopGradient",
    }
)


def is_view(name: str) -> bool:
    """A primitive (as export_to_dot names it) that launches no kernel of its own; `View
    <dtype>` reinterprets a buffer of the same item size."""
    return name in VIEW_PRIMITIVES or name.startswith("View ")


def compute_count(counts: Counter) -> int:
    """Primitives in `counts` that compute (not views)."""
    return sum(n for k, n in counts.items() if not is_view(k))


def dot_counts(text: str) -> Counter:
    """Primitive nodes by type in `mx.export_to_dot` output (a multi-output primitive is one node)."""
    return Counter(m.group(1) for m in _NODE.finditer(text))


def graph_counts(*arrays: mx.array) -> Counter:
    """Primitives still to run to evaluate `arrays` (empty when they are evaluated)."""
    arrs = [a for a in _flatten(arrays) if isinstance(a, mx.array)]
    if not arrs:
        return Counter()
    buf = io.StringIO()
    mx.export_to_dot(buf, *arrs)
    return dot_counts(buf.getvalue())


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    elif isinstance(x, dict):
        for y in x.values():
            yield from _flatten(y)
    else:
        yield x


class SyncHooks:
    """Context manager wrapping every synchronisation point of MLX's Python API.

    count=True: count the primitives each synchronisation runs (in `self.counts`);
    always: the number of synchronisations (`self.syncs`) and the time spent inside them
    (`self.sync_s`: graph execution as seen from the host)."""

    def __init__(self, count: bool = False):
        self.count = count
        self.counts: Counter = Counter()
        self.syncs = 0
        self.sync_s = 0.0
        self._saved: list[tuple[object, str, object]] = []

    def reset(self) -> None:
        self.counts = Counter()
        self.syncs = 0
        self.sync_s = 0.0

    def _wrap(self, fn, arrays_of):
        hooks = self

        def wrapped(*args, **kwargs):
            if hooks.count:
                hooks.counts.update(graph_counts(*arrays_of(args)))
            hooks.syncs += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                hooks.sync_s += time.perf_counter() - t

        return wrapped

    def __enter__(self) -> "SyncHooks":
        for name in ("eval", "async_eval"):
            orig = getattr(mx, name)
            self._saved.append((mx, name, orig))
            setattr(mx, name, self._wrap(orig, lambda args: args))
        for name in _ARRAY_METHODS:
            orig = getattr(mx.array, name, None)
            if orig is None:
                continue
            try:
                setattr(mx.array, name, self._wrap(orig, lambda args: args[:1]))
            except (AttributeError, TypeError):  # pragma: no cover - a binding that refuses
                continue
            self._saved.append((mx.array, name, orig))
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, orig in reversed(self._saved):
            setattr(owner, name, orig)
        self._saved.clear()


def device_name() -> str:
    """The default device in words: 'cpu (AMD EPYC)', 'gpu (Apple M2 Max)', 'gpu (NVIDIA H200)'."""
    dev = mx.default_device()
    info: dict = {}
    try:
        info = dict(mx.device_info())
    except Exception:  # noqa: BLE001 - older MLX: the metal module has it
        try:
            info = dict(mx.metal.device_info())
        except Exception:  # noqa: BLE001
            info = {}
    name = info.get("device_name") or info.get("name") or info.get("architecture") or ""
    kind = "gpu" if dev.type == mx.DeviceType.gpu else "cpu"
    return f"{kind} ({name})" if name else kind


def peak_memory_mb() -> float:
    """MLX's peak allocation in this process (device memory on a GPU), MB."""
    get = getattr(mx, "get_peak_memory", None) or getattr(getattr(mx, "metal", None), "get_peak_memory", None)
    return get() / 2**20 if get else float("nan")


def measure_steps(step, steps: int, warmup: int, count_steps: int = 3) -> dict:
    """Run `step()` (one frame step, synchronised at its end) warmup + steps times plain,
    (wall time, and the CPU time of the whole process, all threads: on a shared machine the
    latter barely moves with the load), then `steps` times with timed synchronisations (host time outside them = graph
    building in Python), then `count_steps` times counting primitives."""
    for _ in range(warmup):
        step()
    plain, cpu = [], []
    for _ in range(steps):
        c = time.process_time()
        t = time.perf_counter()
        step()
        plain.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    build, inside, syncs = [], [], []
    with SyncHooks() as h:
        for _ in range(steps):
            h.reset()
            t = time.perf_counter()
            step()
            total = time.perf_counter() - t
            build.append((total - h.sync_s) * 1e3)
            inside.append(h.sync_s * 1e3)
            syncs.append(h.syncs)
    per_step = []
    with SyncHooks(count=True) as h:
        for _ in range(count_steps):
            h.reset()
            step()
            per_step.append(h.counts)
    totals = [sum(c.values()) for c in per_step]
    by_type = per_step[-1]
    return {
        "step_ms_raw": plain,
        "step_cpu_ms_raw": cpu,
        "build_ms_raw": build,
        "sync_ms_raw": inside,
        "syncs": syncs[-1] if syncs else 0,
        "primitives_per_step": totals,
        "primitives": totals[-1] if totals else 0,
        "compute_primitives": compute_count(by_type) if per_step else 0,
        "primitives_by_type": dict(by_type.most_common()),
        "device": device_name(),
        "mlx": mx.__version__,
        "peak_mb": peak_memory_mb(),
    }
