"""Run pytest on the files given, in this process, then exit with code 0 (issue 26).

Run as a script by tests/runtime/test_exit.py: what it checks is how the process ends after
its last test (SIGSEGV, exit code 139, before the fix), not the tests' outcome, which the
suite reports itself (the files are part of it) and which a loaded machine can change (their
real-time checks). So the exit code does not carry it: 0 whatever the tests did, a signal
if the exit crashes. Prints one JSON line: pytest's exit status, the tests collected, and
the tests that ran to their end.
"""

import json
import sys

import pytest


class _Seen:
    def __init__(self):
        self.collected, self.finished = 0, 0

    def pytest_collection_finish(self, session):
        self.collected = len(session.items)

    def pytest_runtest_logfinish(self, nodeid, location):
        self.finished += 1


seen = _Seen()
status = pytest.main(sys.argv[1:], plugins=[seen])
print(json.dumps({"status": int(status), "collected": seen.collected, "finished": seen.finished}), flush=True)
sys.exit(0)
