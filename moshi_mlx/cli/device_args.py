"""The sound-card flags that moshi-local and moshi-stt share, their `--list-devices` answer
(given before anything else is checked or a model is loaded), and the check that the devices
a run will open exist (moshi-local, moshi-translate live, moshi-stt live, moshi-tts to the
speakers), made before the model loads."""

from __future__ import annotations

import argparse
from typing import Callable

from ..runtime.devices import find_device, list_devices


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


def check_devices(args: argparse.Namespace, *, input: bool = False, output: bool = False) -> None:
    """The devices a live run will open (`--input-device` / `--output-device`, or the system's)
    exist: a missing or misspelled one is said (one error line naming the devices of its kind)
    before a model loads for a minute, not after."""
    if input:
        find_device(args.input_device, "input")
    if output:
        find_device(args.output_device, "output")
