"""`moshi-convert --model random-tiny`: the demo checkpoint's temporary folder never outlives
the process, whenever a stop signal lands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SIGNAL_AT_MKDTEMP = """
import signal, sys, tempfile
sys.path.insert(0, sys.argv[1])
from moshi_mlx.cli import convert, early

early.install({})  # the runner's handler: a stop signal raises Interrupted
real = tempfile.mkdtemp

def mkdtemp(*args, **kw):  # the folder made, then SIGTERM before anything else runs
    kw["dir"] = sys.argv[2]
    made = real(*args, **kw)
    signal.raise_signal(signal.SIGTERM)
    return made

tempfile.mkdtemp = mkdtemp
try:
    convert._demo_checkpoint("random-tiny", 1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


def test_a_signal_just_after_the_demo_folder_is_made_leaves_no_folder(tmp_path):
    """A SIGTERM between `tempfile.mkdtemp` and the atexit removal's registering left the folder
    (a random checkpoint) in the temporary directory for good."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", SIGNAL_AT_MKDTEMP, str(root), str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "interrupted", (proc.returncode, proc.stdout, proc.stderr)
    assert list(tmp_path.iterdir()) == []
