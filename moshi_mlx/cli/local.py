"""`python -m moshi_mlx.local` (console script `moshi-local`): talk with Moshi through the
microphone and speakers, both directions at once, offline.

The flags of upstream's `moshi_mlx.local` are kept (-q, --hf-repo, --moshi-weight,
--mimi-weight, --tokenizer, --lm-config). Latency is bounded by --max-lag-ms: when compute
falls behind, input frames are skipped and late output is dropped instead of letting the
delay grow; the current delay is shown as it changes. There is no step limit.
"""

from __future__ import annotations

import argparse
import math
import queue
import signal
import sys
import threading
import time

from ..audio.io import read_audio
from ..constants import SAMPLE_RATE
from ..errors import Error
from ..outputs import Output, check_outputs
from ..runtime.devices import SoundDeviceIO
from ..runtime.echo import add_echo_args, echo_from_args
from ..runtime.loading import add_model_args, add_sampling_args, load_session, model_inputs, sampling_kwargs
from ..runtime.recorder import StereoRecorder
from ..runtime.sim_device import SimulatedAudioDevice
from ..runtime.transcript import TRANSCRIPT_SUFFIXES
from ..validation import float_arg, positive_or_off_arg
from .device_args import add_device_args, list_devices_or_run
from .runner import OneLineParser, cli_main, received_signal

TRANSCRIPT_SAVE_S = 5.0  # the transcript is saved this often during a session (and at the end)


class DeviceLost(RuntimeError):
    pass


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-local", description=__doc__.split("\n\n")[0])
    add_model_args(ap)
    add_sampling_args(ap)
    g = ap.add_argument_group("audio")
    add_device_args(g, output=True)
    g.add_argument("--max-lag-ms", type=positive_or_off_arg("--max-lag-ms"), default=400.0,
                   help='bound on the delay from speaking to hearing the answer\'s frame (default 400; "off": '
                        "never skip or drop frames)")
    g.add_argument("--record", help="record both sides to this stereo WAV (left: you, right: Moshi)")
    g.add_argument("--transcript", help="save Moshi's words with timestamps (.json, or .txt)")
    g.add_argument("--force", action="store_true", help="replace existing --record / --transcript files")
    g.add_argument("--duration", type=positive_or_off_arg("--duration"),
                   help="stop after this many seconds (default: until Ctrl-C)")
    g.add_argument("--simulate", metavar="AUDIO_FILE",
                   help="no sound card: a simulated device plays this file as the microphone, in real time")
    g.add_argument("--slow-step-ms", type=float_arg("--slow-step-ms", lo=0.0), default=0.0,
                   help="add this much compute time to every LM step (to see the lag control on a fast machine)")
    add_echo_args(ap)
    return ap


class _Status:
    """Shows the delay in the text stream when it changes noticeably, upstream-style."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.last_shown = (math.nan, 0, 0)
        self.last_time = 0.0

    def maybe_show(self, stats, force: bool = False) -> None:
        delay, skipped, trimmed = stats.last_delay_ms, stats.frames_skipped, stats.frames_trimmed
        d0, s0, t0 = self.last_shown
        now = time.monotonic()
        changed = (math.isnan(d0) and not math.isnan(delay)) or abs(delay - d0) >= 80 or skipped != s0 or trimmed != t0
        if force or (changed and now - self.last_time > 1.0) or now - self.last_time > 15.0:
            if not math.isnan(delay):
                extra = f", {skipped} skipped, {trimmed} trimmed" if (skipped or trimmed) else ""
                self.stream.write(f" [lag {delay:.0f} ms{extra}] ")
                self.stream.flush()
            self.last_shown = (delay, skipped, trimmed)
            self.last_time = now


def check_paths(args) -> None:
    """Outputs checked before the model is loaded: folders exist and are writable, known
    extensions, no path in two roles, existing files replaced only with --force."""
    check_outputs([Output("--record", args.record, (".wav",), args.force),
                   Output("--transcript", args.transcript, TRANSCRIPT_SUFFIXES, args.force)],
                  [("--simulate", args.simulate), *model_inputs(args)])


def run(args) -> int:
    check_paths(args)
    model = load_session(args)
    if model.is_demo:
        print(f"NOTE: {model.description}", file=sys.stderr)
    gen = model.generator(**sampling_kwargs(args))
    if args.simulate:
        source = read_audio(args.simulate)
        device = SimulatedAudioDevice(source.reshape(-1), sample_rate=SAMPLE_RATE, loop=False)
        in_rate = out_rate = SAMPLE_RATE
        io = None
        print(f"simulated device: {args.simulate} as the microphone", file=sys.stderr)
    else:
        device = None
        io = SoundDeviceIO(args.input_device, args.output_device)
        in_rate, out_rate = io.input_rate, io.output_rate
        print(io.describe(), file=sys.stderr)
    echo = echo_from_args(args, getattr(io, "output_name", None), input_rate=in_rate,
                          output_rate=out_rate, log=lambda m: print(m, file=sys.stderr))
    transcript = model.new_transcript()
    events: queue.Queue = queue.Queue()
    status = _Status()
    sim_thread = None
    recorder = None
    pipe = None
    code = 0
    saved_words = 0
    t_start = t_saved = time.monotonic()
    try:
        recorder = StereoRecorder(args.record) if args.record else None
        pipe = model.pipeline(gen, input_rate=in_rate, output_rate=out_rate, max_lag_ms=args.max_lag_ms,
                              on_text=events.put, recorder=recorder, step_delay_s=args.slow_step_ms / 1000.0,
                              echo=echo, record_raw_mic=args.record_mic == "raw")
        pipe.start()
        if io is not None:
            io.start(pipe)
        else:
            n_blocks = math.ceil(len(device.source) / device.block) + 5
            if args.duration:
                n_blocks = min(n_blocks, int(args.duration * SAMPLE_RATE / device.block))
            sim_thread = threading.Thread(target=device.run, args=(pipe, n_blocks, False), daemon=True)
            sim_thread.start()
        print("listening... (Ctrl-C to stop)", file=sys.stderr)
        while True:
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                ev = None
            if ev is not None:
                piece = transcript.add(ev.token, ev.frame)
                if piece:
                    sys.stdout.write(piece)
                    sys.stdout.flush()
            status.maybe_show(pipe.stats)
            if pipe.failed.is_set():
                raise pipe.error
            if recorder is not None and recorder.failed.is_set():
                raise recorder.error  # disk full, file size limit: stop rather than carry on unrecorded
            if io is not None and not io.alive():
                raise DeviceLost("the audio device stopped or disappeared")
            now = time.monotonic()
            if args.transcript and now - t_saved >= TRANSCRIPT_SAVE_S and len(transcript.words) != saved_words:
                transcript.save(args.transcript)  # incrementally: a crash loses at most a few seconds
                saved_words, t_saved = len(transcript.words), now
            if sim_thread is not None and not sim_thread.is_alive() and events.empty():
                break
            if args.duration and now - t_start >= args.duration:
                break
    except KeyboardInterrupt:
        sig = received_signal()
        print(f"\nstopping ({'Ctrl-C' if sig in (None, signal.SIGINT) else signal.Signals(sig).name})", file=sys.stderr)
    except DeviceLost as e:
        print(f"\nerror: {e}", file=sys.stderr)
        code = 1
    finally:
        _shut_down(args, io, sim_thread, device, pipe, recorder, transcript)
    if pipe is None:
        return code
    s = pipe.stats.summary()
    if not s["frames_stepped"]:  # no step timed: no medians to show ("nan ms")
        print("\n0 steps: the session ended before the model answered a frame", file=sys.stderr)
    else:
        print(f"\n{s['frames_stepped']} steps, delay median {s['delay_ms_median']:.0f} ms / max {s['delay_ms_max']:.0f} ms, "
              f"{s['frames_skipped']} skipped, {s['frames_trimmed']} trimmed, {s['frames_settled']} settled, "
              f"{s['underruns']} underruns, step median {s['step_ms_median']:.1f} ms", file=sys.stderr)
    if echo is not None:
        print(echo.stats.describe(), file=sys.stderr)
    if pipe.error is not None and code == 0:
        raise pipe.error
    return code


def _shut_down(args, io, sim_thread, device, pipe, recorder, transcript) -> None:
    """Stop the devices and workers, then save the recording and the transcript, each on
    its own (a failure of one does not lose the other; the first failure is re-raised)."""
    failure: BaseException | None = None
    if io is not None:
        io.close()
    if sim_thread is not None:
        device.stop_event.set()
        sim_thread.join(5)
    if pipe is not None:
        pipe.stop(timeout=5)
    if recorder is not None:
        try:
            recorder.close()
        except Error as e:
            failure = e
        note = " (up to the write error)" if recorder.error is not None else ""
        print(f"\nrecording saved: {recorder.path} ({recorder.seconds:.1f} s{note})", file=sys.stderr)
    if args.transcript:
        try:
            transcript.save(args.transcript)
            print(f"transcript saved: {args.transcript}", file=sys.stderr)
        except Error as e:
            failure = failure or e
    if failure is not None:
        raise failure


@cli_main
def main(argv=None) -> int:
    return list_devices_or_run(parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
