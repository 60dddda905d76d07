"""The live loop's session: a sound card (or a simulated one playing a file) around the
duplex pipeline, the running transcript and the lag display, until the file ends, a
duration, Ctrl-C or the device goes away; then the recording and transcript are saved, each
on its own. `moshi-local` parses flags and calls `run_session`; see docs/live-loop.md.
"""

from __future__ import annotations

import contextlib
import math
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

import numpy as np

from ..constants import SAMPLE_RATE
from ..errors import DeviceError, Error
from .devices import SoundDeviceIO
from .pipeline import MAX_LAG_MS
from .recorder import StereoRecorder
from .sim_device import SimulatedAudioDevice
from .translation import InputEnd, input_end

TRANSCRIPT_SAVE_S = 5.0  # the transcript is saved this often during a session (and at the end)
# a simulated microphone's file: silence after it for the decoder and playback to deliver the
# last answer, beyond what the model's rule asks (`InputEnd`); the session stops when caught up
DRAIN_FRAMES = 25


class DeviceLost(DeviceError):
    """The sound card stopped or disappeared mid-session (what was produced is saved; exit 1)."""


@dataclass(frozen=True)
class LiveOptions:
    """What a session is asked to do besides talking (the moshi-local flags of the same names)."""

    max_lag_ms: float | None = MAX_LAG_MS
    duration: float | None = None  # seconds; None: until the input ends or Ctrl-C
    record: str | None = None  # stereo WAV: left the user, right the model
    record_raw_mic: bool = False  # the recording's left channel as captured, not as cleaned
    transcript: str | None = None
    step_delay_s: float = 0.0  # added to every LM step (to see the lag control on a fast machine)
    input_device: str | None = None
    output_device: str | None = None
    end_policy: object | None = None  # a translation model's live end of turn (translation.SilencePolicy)


class _Status:
    """Shows the delay in the text stream when it changes noticeably, upstream-style."""

    def __init__(self, stream: TextIO):
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
                with contextlib.suppress(OSError):  # a status line (see run_session's `say`)
                    self.stream.write(f" [lag {delay:.0f} ms{extra}] ")
                    self.stream.flush()
            self.last_shown = (delay, skipped, trimmed)
            self.last_time = now


def summary_line(stats) -> str:
    """The end-of-session line. Medians only of what there is: no step, or no audio out (a
    speech-to-text model), prints no `nan ms`."""
    s = stats.summary()
    if not s["frames_stepped"]:
        return "0 steps: the session ended before the model answered a frame"
    delay = (
        "no audio out"
        if math.isnan(s["delay_ms_median"])
        else f"delay median {s['delay_ms_median']:.0f} ms / max {s['delay_ms_max']:.0f} ms"
    )
    turns = f", {s['end_markers']} turns ended ({s['turns_done']} answered with EOS)" if s["end_markers"] else ""
    if s["input_non_finite"]:  # a device's glitch: the session went on, the user should know why it sounded off
        turns += f", {s['input_non_finite']} NaN/infinite microphone samples taken as silence"
    return (
        f"{s['frames_stepped']} steps, {delay}, {s['frames_skipped']} skipped, {s['frames_trimmed']} trimmed, "
        f"{s['frames_settled']} settled, {s['underruns']} underruns, step median {s['step_ms_median']:.1f} ms" + turns
    )


@dataclass
class SessionResult:
    code: int  # 0, or 1 when the device was lost
    pipe: object | None  # the DuplexPipeline (None if it never started)
    echo: object | None


def run_session(
    model,
    gen,
    opts: LiveOptions,
    *,
    source: np.ndarray | None = None,
    make_echo: Callable[[str | None, int, int], object | None] = lambda name, i, o: None,
    out: TextIO | None = None,
    log: TextIO | None = None,
    received_signal: Callable[[], int | None] = lambda: None,
) -> SessionResult:
    """Talk until the source ends (a simulated microphone playing `source`, 24 kHz mono),
    `opts.duration`, Ctrl-C or a lost device; the recording and the transcript are saved on
    the way out whatever happened (the first save failure is raised after both ran).
    out: the running text (default stdout); log: status lines (default stderr).
    make_echo(output device name, input rate, output rate): the echo canceller or None."""
    out, log = out or sys.stdout, log or sys.stderr  # (looked up now: a test may have replaced them)

    def say(m: str) -> None:
        """A status line. One that cannot be written (the terminal hung up: EIO; a closed pipe)
        must not stop the saving: `_shut_down`'s 'recording saved' failing skipped the
        transcript's last save."""
        with contextlib.suppress(OSError):
            print(m, file=log)

    end = input_end(model)
    if source is not None:
        # the file's end as in Model.respond: the marker (translation), silence until the answer
        # has caught up (`_caught_up`), at most the rule's frames
        marker = (lambda p: p.push_end_of_input(if_open=True)) if end.marker else None
        device = SimulatedAudioDevice(
            source.reshape(-1), sample_rate=SAMPLE_RATE, loop=False, then_silence=True, on_source_end=marker
        )
        io = None
        in_rate = out_rate = SAMPLE_RATE
    else:
        device, io = None, SoundDeviceIO(opts.input_device, opts.output_device)
        in_rate, out_rate = io.input_rate, io.output_rate
        say(io.describe())
    echo = make_echo(getattr(io, "output_name", None), in_rate, out_rate)
    transcript = model.new_transcript()
    events: queue.Queue = queue.Queue()
    status = _Status(log)
    sim_thread = recorder = pipe = None
    code = 0
    saved_words = 0
    t_start = t_saved = time.monotonic()
    try:
        recorder = StereoRecorder(opts.record) if opts.record else None
        pipe = model.pipeline(
            gen,
            input_rate=in_rate,
            output_rate=out_rate,
            max_lag_ms=opts.max_lag_ms,
            on_text=events.put,
            recorder=recorder,
            step_delay_s=opts.step_delay_s,
            echo=echo,
            record_raw_mic=opts.record_raw_mic,
            **({"end_policy": opts.end_policy} if opts.end_policy is not None else {}),
        )
        pipe.start()
        if io is not None:
            io.start(pipe)
        else:
            n_blocks = math.ceil(len(device.source) / device.block) + end.wait_frames + end.tail + DRAIN_FRAMES
            if opts.duration:
                n_blocks = min(n_blocks, int(opts.duration * SAMPLE_RATE / device.block))
            sim_thread = threading.Thread(target=device.run, args=(pipe, n_blocks, False), daemon=True)
            sim_thread.start()
        say("listening... (Ctrl-C to stop)")
        while True:
            try:
                ev = events.get(timeout=0.5)
            except queue.Empty:
                ev = None
            if ev is not None:
                piece = transcript.add(ev.token, ev.frame)
                if piece:
                    out.write(piece)
                    out.flush()
                if ev.end_of_turn:  # a translation model said all of the turn
                    out.write("\n")
                    out.flush()
            status.maybe_show(pipe.stats)
            if pipe.failed.is_set():
                raise pipe.error
            if recorder is not None and recorder.failed.is_set():
                raise recorder.error  # disk full, file size limit: stop rather than carry on unrecorded
            if io is not None and not io.alive():
                raise DeviceLost("the audio device stopped or disappeared")
            now = time.monotonic()
            if opts.transcript and now - t_saved >= TRANSCRIPT_SAVE_S and len(transcript.words) != saved_words:
                transcript.save(opts.transcript)  # incrementally: a crash loses at most a few seconds
                saved_words, t_saved = len(transcript.words), now
            if sim_thread is not None and not sim_thread.is_alive() and events.empty():
                break  # the file and its tail at most (the answer did not catch up in time)
            if device is not None and events.empty() and _caught_up(pipe, device, end, model.speaks):
                break
            if opts.duration and now - t_start >= opts.duration:
                break
    except KeyboardInterrupt:
        sig = received_signal()
        say(f"\nstopping ({'Ctrl-C' if sig in (None, signal.SIGINT) else signal.Signals(sig).name})")
    except DeviceLost as e:
        say(f"\nerror: {e}")
        code = 1
    finally:
        _shut_down(opts, io, sim_thread, device, pipe, recorder, transcript, say)
    return SessionResult(code, pipe, echo)


def _caught_up(pipe, device: SimulatedAudioDevice, end: InputEnd, speaks: bool) -> bool:
    """The simulated microphone's file has ended and the model's answer to it is out: the
    marker's EOS came (translation), and the step `end.tail` frames after the last frame to
    answer has run and its audio was played (or dropped as late). Frame numbers are input
    frames: an output frame carries the frame of the step that gave it."""
    if not device.source_done.is_set():
        return False
    last = device.source_blocks - 1
    if end.marker:
        if pipe.ends_done < 1:  # the encoder has not reached the file's end yet
            return False
        marked, answered = pipe.last_marker_frame, pipe.last_answer_frame
        if marked is not None:
            if answered is None or answered < marked:
                return False  # the last turn's EOS has not come
            last = answered
    target = last + end.tail
    done = pipe.last_output_frame if speaks else pipe.last_step_frame
    return done is not None and done >= target


def _shut_down(opts: LiveOptions, io, sim_thread, device, pipe, recorder, transcript, say) -> None:
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
        say(f"\nrecording saved: {recorder.path} ({recorder.seconds:.1f} s{note})")
    if opts.transcript:
        try:
            transcript.save(opts.transcript)
            say(f"transcript saved: {opts.transcript}")
        except Error as e:
            failure = failure or e
    if failure is not None:
        raise failure


__all__ = ["LiveOptions", "run_session", "summary_line", "DeviceLost", "SessionResult"]
