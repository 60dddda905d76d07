"""Use every compiled path of the package in one process, then exit (issue 26).

Run as a script by tests/runtime/test_exit.py (and on a GPU by scripts/gpu_check.sh): the
process must exit with code 0. Before the fix it died with SIGSEGV (139) after printing its
result: a pooled worker imported mlx.core first, so MLX's own exit hook cleared that
worker's compile cache instead of the main thread's, and the main thread's cache (MLX's
shared `nn.silu`/`nn.gelu`, last called from a worker) was torn down after finalization.
Prints one JSON line: how many calls ran each compiled path.
"""

import json
import sys

from moshi_mlx.runtime.workers import run_in_worker

# a pooled worker exists before anything else touches MLX (as in a test run whose first
# pipeline uses numpy fakes)
run_in_worker(lambda: None).wait()

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

import moshi_mlx  # noqa: E402
from moshi_mlx.models.backend import prepare_lm, prepare_mimi  # noqa: E402

model = moshi_mlx.load("random-tiny", mimi_backend="mlx")
model.compute = prepare_lm(model.lm, profile="gpu")  # the GPU format: compiled frame step
mimi = model.codec.encoder
prepare_mimi(mimi, profile="gpu")  # Mimi's compiled streaming steps
assert model.compute.compiled and mimi.compiled_step

# the main thread: frame steps and Mimi steps
gen = model.generator()
assert gen.compiled  # the model's format reaches its generators
for _ in range(4):
    gen.step(np.zeros(model.n_user, dtype=np.int64))
for _ in range(3):
    model.codec.decode_step(model.codec.encode_step(np.zeros(model.codec.frame_size, np.float32)))

# the pipeline: the same compiled paths on its worker threads
with model.conversation() as conv:
    conv.feed(np.zeros(24000 // 2, np.float32))
print(
    json.dumps(
        {
            "frame_step_threads": [len(gen._frame._per_thread), len(conv.generator._frame._per_thread)],
            "mimi_threads": [len(mimi._compiled[d]._per_thread) for d in ("encoder", "decoder")],
            "mimi_compiled_calls": [mimi._compiled[d].compiled_calls for d in ("encoder", "decoder")],
            "device": str(mx.default_device()),
        }
    )
)
sys.stdout.flush()
