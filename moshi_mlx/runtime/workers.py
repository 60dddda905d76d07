"""Long-lived worker threads for MLX work.

MLX streams belong to the thread that made them, so each pipeline worker needs its own.
Threads that made an MLX stream must also never exit while the interpreter shuts down:
MLX's per-thread state is torn down on thread exit, and doing that concurrently with
interpreter finalization aborts the process now and then ("terminate called without an
active exception", seen here ~1 run in 10 with fresh threads per pipeline). So workers
are pooled for the life of the process: a finished task returns its thread to the pool,
and at exit idle workers are simply blocked on their task queue.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

_lock = threading.Lock()
_idle: list["_Worker"] = []
_count = 0


class _Worker:
    def __init__(self, index: int):
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=f"moshi-worker-{index}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            import mlx.core as mx

            ctx = mx.stream(mx.new_stream(mx.default_device()))
        except Exception:  # pragma: no cover - MLX always present in practice
            import contextlib

            ctx = contextlib.nullcontext()
        with ctx:
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
