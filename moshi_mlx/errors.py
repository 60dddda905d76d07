"""One error hierarchy for everything a user can get wrong (files, configs, weights, audio,
devices, argument values, output paths). Each message is a complete sentence naming the thing
and the problem, so the CLIs catch `Error` alone and print one line; anything else is a bug and
keeps its traceback. It lives at the package root because every layer raises it."""

import signal

# The signals that stop a tool cleanly (cli/runner.py turns them into KeyboardInterrupt; the web
# server and outputs.signals_held handle the same ones): Ctrl-C, `kill`, a closed terminal.
STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


class Error(Exception):
    """Base class of moshi_mlx's user-facing errors."""


class UsageError(Error, ValueError):
    """A caller's argument or flag value is out of range, of the wrong type, or contradicts another."""


class ConfigError(Error, ValueError):
    """A model config (config.json, preset) is malformed or inconsistent."""


class WeightsError(Error, ValueError):
    """A weights file is missing, corrupt, or does not fit the model."""


class AudioError(Error, ValueError):
    """An audio file or array cannot be used (unreadable, wrong shape, NaN, ...)."""


class DeviceError(Error, RuntimeError):
    """An audio device is missing, refused, or was lost mid-session."""


class OutputError(Error, OSError):
    """An output cannot be written (no such folder, not writable, disk full, same path twice)."""


__all__ = ["Error", "UsageError", "ConfigError", "WeightsError", "AudioError", "DeviceError", "OutputError"]
