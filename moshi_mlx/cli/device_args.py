"""The sound-card flags that moshi-local and moshi-stt share, and their `--list-devices`
answer (given before anything else is checked or a model is loaded)."""

from __future__ import annotations

import argparse
from typing import Callable

from ..runtime.devices import list_devices


def add_device_args(group: argparse._ArgumentGroup, output: bool) -> None:
    """`--list-devices`, `--input-device` and, with `output`, `--output-device`."""
    group.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    group.add_argument("--input-device", help="input device: index or (part of) its name (default: system default)")
    if output:
        group.add_argument(
            "--output-device", help="output device: index or (part of) its name (default: system default)"
        )


def list_devices_or_run(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """With `--list-devices`, print the device table and return 0; otherwise `run(args)`."""
    if args.list_devices:
        print(list_devices())
        return 0
    return run(args)
