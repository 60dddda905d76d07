"""Real PortAudio devices for tests: skipped where there are none, required in CI
(MOSHI_REQUIRE_AUDIO, set by scripts/test.sh)."""

import os
from typing import Callable, TypeVar

import pytest

from moshi_mlx.runtime.devices import AudioDeviceError, SoundDeviceIO

T = TypeVar("T")


def open_or_skip(make: Callable[[], T] = SoundDeviceIO) -> T:
    try:
        return make()
    except AudioDeviceError as e:
        if os.environ.get("MOSHI_REQUIRE_AUDIO"):
            raise
        pytest.skip(f"no audio devices here: {e}")
