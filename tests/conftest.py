"""Test-session setup shared by every test file."""

import signal


def pytest_configure(config):
    """The tools keep a stop signal ignored when they start (`nohup`, a background job: as Python
    does for SIGINT). A suite started where SIGINT or SIGHUP is ignored (a job a non-interactive
    shell put in the background) would pass that on to every tool it runs, and the tests that
    send those signals would see them ignored: the session takes them back (Python's defaults),
    so its children start with the default action."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
