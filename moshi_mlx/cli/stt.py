"""`python -m moshi_mlx.stt [AUDIO_FILE]` (console script `moshi-stt`): streaming speech-to-text
with Kyutai's STT models, from the microphone (no file given) or from an audio file.

Words are printed as they are recognised, with their times; the end of the speaker's turn
(the 1B model's voice-activity heads) is shown as `[end of turn]`. `--transcript` saves the
words and events (.json), subtitles (.srt, .vtt) or the text (.txt).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time

from .. import demo_clip
from ..audio.io import read_audio
from ..constants import CONVERT_COMMAND, DEFAULT_SEED
from ..errors import ConfigError, DeviceError, UsageError
from ..models.sampling import check_text_sampling
from ..outputs import Output, check_outputs
from ..runtime.devices import SoundDeviceIO
from ..runtime.pipeline import FRAME_SIZE, SAMPLE_RATE
from ..runtime.sim_device import SimulatedAudioDevice
from ..runtime.stt import END_OF_TURN_THRESHOLD, TEXT_TEMP, VAD_REPO, SttUpdate, check_stt_model
from ..runtime.stt_live import PipelineTranscriber
from ..runtime.subtitles import check_output_path, save_transcript
from ..validation import seed_arg
from .device_args import add_device_args, check_devices, list_devices_or_run
from .flags import add_force_arg
from .model_args import add_model_args, load_session, model_inputs, use_default_repo
from .model_kind import what_it_is
from .runner import OneLineParser, cli_main, received_signal

DEFAULT_REPO = VAD_REPO  # the STT weights with end-of-turn heads (-mlx has none)


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="moshi-stt", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "infile", nargs="?", help="audio file to transcribe (any format, rate, channels); none: the microphone"
    )
    add_model_args(
        ap,
        default_repo=f"{DEFAULT_REPO}; or a q4/q8 folder made by {CONVERT_COMMAND}",
        quantized_help=f"Moshi's repos only: for speech-to-text give --hf-repo a q4/q8 folder ({CONVERT_COMMAND})",
    )
    g = ap.add_argument_group("transcription")
    g.add_argument(
        "--transcript",
        help="save the transcript: .json (words, times, end-of-turn events), .srt or .vtt (subtitles), .txt (text)",
    )
    add_force_arg(g, "--transcript")
    g.add_argument(
        "--words", action="store_true", help="print one line per word (start, end, word) instead of the running text"
    )
    g.add_argument(
        "--vad-threshold",
        type=float,
        default=END_OF_TURN_THRESHOLD,
        help="end-of-turn probability above which the turn is over (default %(default)s)",
    )
    g.add_argument("--temp", type=float, help=f"text temperature (default {TEXT_TEMP:g}: greedy, as Kyutai's scripts)")
    g.add_argument("--top-k", type=int, help="text top-k (with --temp)")
    g.add_argument("--top-p", type=float, help="text top-p (with --temp)")
    g.add_argument(
        "--seed", type=seed_arg(), default=DEFAULT_SEED, help=f"sampling seed, in [0, 2**32) (default {DEFAULT_SEED})"
    )
    g.add_argument("--quiet", action="store_true", help="print nothing but errors (and the summary)")
    a = ap.add_argument_group("microphone")
    add_device_args(a, output=False)
    a.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    a.add_argument(
        "--simulate",
        metavar="AUDIO_FILE",
        nargs="?",
        const=demo_clip(),
        help="no sound card: a simulated microphone plays this file in real time (no file: the "
        "package's short spoken clip)",
    )
    return ap


def _fmt(t: float) -> str:
    m, s = divmod(max(t, 0.0), 60)
    return f"{int(m)}:{s:05.2f}"


class _Printer:
    """Running text, a line per turn with its start time in front; or one line per word."""

    def __init__(self, words: bool, quiet: bool, stream=None):
        self.words, self.quiet, self.stream = words, quiet, stream or sys.stdout
        self.line_open = False

    def show(self, up: SttUpdate) -> None:
        if self.quiet:
            return
        if self.words:
            for w in up.words:
                self.stream.write(f"{w.start:8.2f} {w.end:8.2f}  {w.text}\n")
            for e in up.events:
                self.stream.write(f"{e.time:8.2f}           [end of turn, p={e.probability:.2f}]\n")
        else:
            if up.text:
                text = up.text
                if not self.line_open:
                    start = up.first_start if up.first_start is not None else 0.0
                    text = f"[{_fmt(start)}] " + text.lstrip()
                    self.line_open = True
                self.stream.write(text)
            for _ in up.events:
                self.stream.write(" [end of turn]\n")
                self.line_open = False
        self.stream.flush()

    def close(self) -> None:
        if self.line_open and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self.line_open = False


def _read(path: str):
    pcm = read_audio(path).reshape(-1)
    if pcm.size == 0:
        raise UsageError(f"{path} contains no audio")
    return pcm


def _show(printer: _Printer, updates: list[SttUpdate]) -> None:
    for up in updates:
        printer.show(up)


def _make(args, session, rate: int, keep: list) -> PipelineTranscriber:
    tr = PipelineTranscriber(
        session,
        in_rate=rate,
        temp=args.temp,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        vad_threshold=args.vad_threshold,
    )
    keep.append(tr)  # so the transcript is saved whatever happens next
    return tr


def _finish(tr: PipelineTranscriber, printer: _Printer) -> None:
    """Feed the tail of silence, wait for every step (a second Ctrl-C stops waiting)."""
    if not tr.failed:
        tr.finish()
    if tr.error is not None:
        raise tr.error
    _show(printer, tr.drain())
    printer.close()


def _transcribe_file(args, session, pcm, printer: _Printer, keep: list) -> None:
    tr = _make(args, session, SAMPLE_RATE, keep).start()
    t0 = time.perf_counter()
    feeder = threading.Thread(
        target=lambda: [tr.push(pcm[i : i + FRAME_SIZE], wait=True) for i in range(0, len(pcm), FRAME_SIZE)],
        daemon=True,
    )
    feeder.start()
    while feeder.is_alive() and not tr.failed:
        _show(printer, tr.poll(0.2))
    if tr.failed:  # the feeder may be blocked on a queue nobody reads: leave it (daemon)
        raise tr.error
    _finish(tr, printer)
    wall = time.perf_counter() - t0
    seconds = len(pcm) / SAMPLE_RATE
    print(
        f"{seconds:.1f} s of audio ({tr.pipe.stats.frames_stepped} steps with the model's padding) in {wall:.1f} s: "
        f"{seconds / wall if wall > 0 else math.inf:.2f}x real time",
        file=sys.stderr,
    )


def _transcribe_live(args, session, source, printer: _Printer, keep: list) -> None:
    """source: samples for the simulated microphone, or None for a sound card."""
    device = io = sim = None
    if source is not None:
        device = SimulatedAudioDevice(source, sample_rate=SAMPLE_RATE, loop=False)
        rate = SAMPLE_RATE
        print(f"simulated microphone: {args.simulate}", file=sys.stderr)
    else:
        io = SoundDeviceIO(args.input_device, output=False)
        rate = io.input_rate
        print(io.describe(), file=sys.stderr)
    tr = _make(args, session, rate, keep).start()
    t_start = time.monotonic()
    try:
        if io is not None:
            io.start(tr.pipe)
        else:
            n_blocks = math.ceil(len(device.source) / device.block)
            if args.duration:
                n_blocks = min(n_blocks, int(args.duration * SAMPLE_RATE / device.block))
            sim = threading.Thread(target=device.run, args=(tr.pipe, n_blocks, False), daemon=True)
            sim.start()
        print("listening... (Ctrl-C to stop)", file=sys.stderr)
        while True:
            _show(printer, tr.poll(0.25))
            if tr.failed:
                raise tr.error
            if io is not None and not io.alive():
                raise DeviceError("the audio device stopped or disappeared")
            if sim is not None and not sim.is_alive():
                break
            if args.duration and time.monotonic() - t_start >= args.duration:
                break
    except KeyboardInterrupt:  # SIGTERM / SIGHUP too (the runner): say which
        signum = received_signal()
        what = "Ctrl-C" if signum in (None, signal.SIGINT) else signal.Signals(signum).name
        print(f"\nstopping ({what}): finishing the last words", file=sys.stderr)
    finally:
        if io is not None:
            io.close()
        if sim is not None:
            device.stop_event.set()
            sim.join(5)
    _finish(tr, printer)


def run(args) -> int:
    if args.vad_threshold is not None and not 0.0 <= args.vad_threshold <= 1.0:
        raise UsageError(f"--vad-threshold must be between 0 and 1, got {args.vad_threshold}")
    if args.duration is not None and args.duration <= 0:
        raise UsageError(f"--duration must be positive, got {args.duration}")
    if args.infile is not None and not args.infile.strip():
        raise UsageError("INFILE: empty path (leave it out to transcribe the microphone)")
    if args.simulate is not None and not args.simulate.strip():
        raise UsageError("--simulate: empty path")
    if args.infile and args.simulate:
        raise UsageError("give an audio file or --simulate, not both")
    check_text_sampling(args.temp, args.top_k, args.top_p)
    if args.transcript:
        check_output_path(args.transcript, args.force)
        # never over an input: the audio, or a file of the model folder (--transcript MODEL/config.json)
        check_outputs(
            [Output("--transcript", args.transcript)],
            [("INFILE", args.infile), ("--simulate", args.simulate), *model_inputs(args)],
        )
    use_default_repo(args, DEFAULT_REPO, "speech-to-text")
    # bad audio fails before a model is loaded
    pcm = _read(args.infile) if args.infile else (_read(args.simulate) if args.simulate else None)
    if pcm is None:  # the microphone: a missing or misspelled --input-device is said before the model loads
        check_devices(args, input=True)
    # a dialogue (or text) model is refused from its config, before its weights are read
    session = load_session(args, check=_check_stt)
    printer = _Printer(args.words, args.quiet)
    keep: list[PipelineTranscriber] = []
    try:
        if args.infile:
            _transcribe_file(args, session, pcm, printer, keep)
        else:
            _transcribe_live(args, session, pcm, printer, keep)
    finally:
        for tr in keep:
            tr.stop()
            if args.transcript:
                save_transcript(
                    args.transcript, tr.decoder.to_dict(), tr.decoder.words, tr.decoder.events, force=args.force
                )
                print(f"transcript saved: {args.transcript}", file=sys.stderr)
    return 0


def _check_stt(cfg, name: str) -> None:
    """`runtime.stt.check_stt_model` (the one rule), in the tool's words: the tool that runs
    the model given, and the flag that gives an STT model."""
    try:
        check_stt_model(cfg, name)
    except ConfigError:
        raise ConfigError(
            f"{name} is not a speech-to-text model ({what_it_is(cfg)}); for speech-to-text give "
            f"--hf-repo a Kyutai STT model such as {DEFAULT_REPO}"
        ) from None


@cli_main
def main(argv=None) -> int:
    return list_devices_or_run(parser().parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
