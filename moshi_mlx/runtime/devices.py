"""Real audio devices through PortAudio (sounddevice), wired to a `DuplexPipeline`.

Streams open at each device's native rate and channel count; the pipeline resamples to and
from Mimi's 24 kHz. Callbacks copy one block in or out and return: they never block.
"""

from __future__ import annotations

import threading
import time


from ..constants import FRAME_SECONDS
from ..errors import DeviceError

AudioDeviceError = DeviceError  # the name this module has always raised


def _sd():
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise AudioDeviceError(
            f"PortAudio is not available ({e}); install it (macOS: it ships with sounddevice; "
            "Debian/Ubuntu: apt-get install libportaudio2)"
        ) from None
    return sd


def _devices():
    sd = _sd()
    try:
        return list(sd.query_devices())
    except Exception as e:
        raise AudioDeviceError(f"cannot query audio devices: {e}") from None


def list_devices() -> str:
    """A readable table of devices, with the default input (>) and output (<) marked."""
    sd = _sd()
    devs = _devices()
    if not devs:
        return "no audio devices found"
    try:
        d_in, d_out = sd.default.device
    except Exception:
        d_in = d_out = -1
    lines = []
    for i, d in enumerate(devs):
        mark = (">" if i == d_in else " ") + ("<" if i == d_out else " ")
        lines.append(
            f"{mark} {i:3d} {d['name']} ({d['max_input_channels']} in, {d['max_output_channels']} out, "
            f"{int(d['default_samplerate'])} Hz)"
        )
    return "\n".join(lines)


def _system_default(kind: str) -> int:
    try:
        default = _sd().default.device[0 if kind == "input" else 1]
    except Exception:
        return -1
    return -1 if default is None else int(default)


def _choices(devs: list, usable: list[int], kind: str) -> str:
    """'the input devices are 0: Built-in Microphone (default), 3: USB Audio': what a device
    error offers instead, in the error's one line (the full table is `list_devices`)."""
    default = _system_default(kind)
    names = ", ".join(f"{i}: {devs[i]['name']}{' (default)' if i == default else ''}" for i in usable)
    return f"the {kind} device{'s are' if len(usable) > 1 else ' is'} {names}"


def find_device(spec: str | int | None, kind: str) -> int:
    """Resolve a device index from None (system default), an index, or a name substring. A
    missing one is one error line naming the devices of that kind (no table after it)."""
    assert kind in ("input", "output")
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    devs = _devices()
    usable = [i for i, d in enumerate(devs) if d[key] > 0]
    if not devs:  # one line: a list of nothing would only say it again
        raise AudioDeviceError(f"no {kind} audio device found: this machine has no audio devices")
    if not usable:
        others = ", ".join(f"{i}: {d['name']}" for i, d in enumerate(devs))
        raise AudioDeviceError(f"no {kind} audio device found: no device has {kind} channels ({others})")
    if spec is None or spec == "":
        default = _system_default(kind)
        return default if default in usable else usable[0]
    if isinstance(spec, int) or str(spec).strip().isdigit():
        idx = int(spec)
        if idx not in usable:
            raise AudioDeviceError(
                f"{kind} device {idx} does not exist or has no {kind} channels; {_choices(devs, usable, kind)}"
            )
        return idx
    matches = [i for i in usable if str(spec).lower() in devs[i]["name"].lower()]
    if not matches:
        raise AudioDeviceError(f"no {kind} device matches {spec!r}; {_choices(devs, usable, kind)}")
    exact = [i for i in matches if devs[i]["name"].lower() == str(spec).lower()]
    if len(matches) > 1 and len(exact) != 1:
        names = ", ".join(f"{i}: {devs[i]['name']}" for i in matches)
        raise AudioDeviceError(f"{kind} device {spec!r} is ambiguous ({names}); give its index")
    return exact[0] if exact else matches[0]


class SoundDeviceIO:
    """Input and output PortAudio streams at the devices' native rates."""

    def __init__(
        self, input_device=None, output_device=None, block_seconds: float = FRAME_SECONDS, output: bool = True
    ):
        """output=False: capture only (speech-to-text); no output device is opened."""
        self.sd = _sd()
        self.input_index = find_device(input_device, "input")
        self.output_index = find_device(output_device, "output") if output else self.input_index
        self.has_output = output
        devs = _devices()
        din, dout = devs[self.input_index], devs[self.output_index]
        self.input_name, self.output_name = din["name"], dout["name"]
        self.input_rate = int(din["default_samplerate"])
        self.output_rate = int(dout["default_samplerate"])
        self.input_channels = min(2, int(din["max_input_channels"]))
        self.output_channels = min(2, int(dout["max_output_channels"]))
        self.block_seconds = block_seconds
        self.xruns = 0
        self.last_callback = time.monotonic()
        self.lost = threading.Event()
        self._streams = []
        self._closing = False

    def describe(self) -> str:
        text = f"input: [{self.input_index}] {self.input_name} @ {self.input_rate} Hz x{self.input_channels}"
        if not self.has_output:
            return text
        return (
            text + f"; output: [{self.output_index}] {self.output_name} @ {self.output_rate} Hz x{self.output_channels}"
        )

    def start(self, pipeline) -> None:
        sd = self.sd

        def on_input(indata, frames, time_info, status):
            if status:
                self.xruns += 1
            self.last_callback = time.monotonic()
            pipeline.push_input(indata)

        def on_output(outdata, frames, time_info, status):
            if status:
                self.xruns += 1
            self.last_callback = time.monotonic()
            outdata[:] = pipeline.read_output(frames)[:, None]

        def finished():
            if not self._closing:
                self.lost.set()

        try:
            out = (
                None
                if not self.has_output
                else sd.OutputStream(
                    device=self.output_index,
                    samplerate=self.output_rate,
                    channels=self.output_channels,
                    dtype="float32",
                    blocksize=int(round(self.output_rate * self.block_seconds)),
                    callback=on_output,
                    finished_callback=finished,
                )
            )
            inp = sd.InputStream(
                device=self.input_index,
                samplerate=self.input_rate,
                channels=self.input_channels,
                dtype="float32",
                blocksize=int(round(self.input_rate * self.block_seconds)),
                callback=on_input,
                finished_callback=finished,
            )
        except Exception as e:
            raise AudioDeviceError(f"cannot open audio streams ({self.describe()}): {e}") from None
        self._streams = [s for s in (out, inp) if s is not None]
        if out is not None:
            pipeline.output_latency_s = float(out.latency)
        if getattr(pipeline, "echo", None) is not None:  # the canceller pairs the streams on the device clock
            pipeline.echo.set_latencies(
                float(inp.latency) if inp is not None else 0.0, float(out.latency) if out is not None else 0.0
            )
        self.last_callback = time.monotonic()
        for s in self._streams:
            s.start()

    def alive(self, stall_seconds: float = 2.0) -> bool:
        """False once a stream has stopped on its own or callbacks stalled (device gone)."""
        if self.lost.is_set():
            return False
        if any(not s.active for s in self._streams):
            return False
        return time.monotonic() - self.last_callback < stall_seconds

    def close(self) -> None:
        self._closing = True
        for s in self._streams:
            try:
                s.stop()
                s.close()
            except Exception:
                pass
        self._streams = []
