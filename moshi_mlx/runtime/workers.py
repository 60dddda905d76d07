"""Long-lived worker threads for MLX work.

MLX streams belong to the thread that made them, so each pipeline worker needs its own.
Threads that made an MLX stream must also never exit while the interpreter shuts down:
MLX's per-thread state is torn down on thread exit, and doing that concurrently with
interpreter finalization aborts the process now and then ("terminate called without an
active exception", seen here ~1 run in 10 with fresh threads per pipeline). So workers
are pooled for the life of the process: a finished task returns its thread to the pool,
and at exit idle workers are simply blocked on their task queue (their thread-local state,
compile cache included, is never torn down).

The main thread's MLX compile cache must be empty before Python finalizes: its entries hold
Python objects, and the cache is destroyed with the thread's C++ thread-locals, after the
interpreter is gone (SIGSEGV in `PyGILState_Ensure`, exit code 139, after correct output).
MLX's shared compiled functions (`nn.silu`, `nn.gelu`, ...) run both here and on the main
thread, and one erases its entries only from the cache of the last thread that called it.
MLX's exit hook (ml-explore/mlx#4373, in 0.32.4) empties the cache of the thread that imported
`mlx.core` (so this module imports it: never first on a worker); MLX 0.32.1 has none
(ml-explore/mlx#4327, #4347). `_clear_main_compile_cache` empties the main thread's anyway.

A caller's own thread (a script loading and running a model in a `threading.Thread`) tears its
cache down when it ends, taking the GIL: if the main thread has begun finalizing by then (a
script whose main thread joins it and exits), that aborts the process ("terminate called
without an active exception", about 1 run in 10 here). `clear_on_thread_end` empties the
cache while the thread's Python state is cleared, before `join()` returns.
"""

from __future__ import annotations

import atexit
import queue
import threading
from typing import Callable

import mlx.core as mx

_lock = threading.Lock()
_idle: list["_Worker"] = []
_count = 0


class _Worker:
    def __init__(self, index: int):
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"moshi-worker-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        _thread_end.pooled = True  # lives as long as the process: nothing to clear when it ends
        with mx.stream(mx.new_stream(mx.default_device())):
            while True:
                fn, done = self.tasks.get()
                try:
                    fn()
                finally:
                    with _lock:
                        _idle.append(self)
                    done.set()


def run_in_worker(fn: Callable[[], None]) -> threading.Event:
    """Run `fn` on a pooled worker thread with its own MLX stream; the returned event is set
    when it has returned (exceptions are the caller's to catch inside `fn`)."""
    global _count
    with _lock:
        if _idle:
            worker = _idle.pop()
        else:
            _count += 1
            worker = _Worker(_count)
    done = threading.Event()
    worker.tasks.put((fn, done))
    return done


class _ClearOnThreadEnd:
    """Kept in a thread-local: freed when its thread's Python state is cleared (in that thread,
    holding the GIL, before the thread's `join()` returns), it empties the thread's MLX
    compile cache and streams, so MLX's C++ thread-local teardown that follows has no Python
    object to release and never needs the GIL (see the module docstring)."""

    def __init__(self) -> None:
        self.ident = threading.get_ident()

    def __del__(self) -> None:
        if threading.get_ident() != self.ident or not hasattr(mx, "clear_streams"):
            return  # freed elsewhere (the thread-local itself collected at exit): not this thread's state
        try:
            mx.synchronize()
        except Exception:  # a failure of earlier work, already reported where it happened
            pass
        mx.clear_streams()


_thread_end = threading.local()


def clear_on_thread_end() -> None:
    """Empty the calling thread's MLX compile cache when it ends (the main thread's is emptied
    at exit, the pool's workers never end). Called where the API starts MLX work on a caller's
    thread (`load`, `Model.generator`); cheap when already done."""
    if getattr(_thread_end, "pooled", False) or getattr(_thread_end, "armed", None) is not None:
        return
    if threading.current_thread() is not threading.main_thread():
        _thread_end.armed = _ClearOnThreadEnd()


def _clear_main_compile_cache() -> None:
    """At exit, before finalization: empty this (the main) thread's MLX compile cache.
    `mx.clear_streams` is MLX's only way to do that; it also drops the thread's streams, so
    a fresh default stream keeps later exit hooks able to compute."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(mx, "clear_streams"):
        return
    device = mx.default_device()
    try:
        mx.synchronize()
    except Exception:  # a failure of earlier work, already reported where it happened
        pass
    mx.clear_streams()
    mx.set_default_stream(mx.new_stream(device))


# registered on import, before the pipeline's `abort_all` (runtime/pipeline.py imports this
# module first), so it runs after it: atexit runs the last registered first
atexit.register(_clear_main_compile_cache)
