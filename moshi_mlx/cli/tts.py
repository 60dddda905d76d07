"""`python -m moshi_mlx.tts "text" [out.wav] --voice NAME`: speak text with Kyutai's TTS
(kyutai/tts-1.6b-en_fr by default), to a file or, without one, to the speakers as it is
generated.

The text comes from the argument, `--text-file FILE`, or stdin (`-`, or no text argument
with piped input). Voices are embeddings from kyutai/tts-voices (e.g. `--voice
expresso/ex03-ex01_happy_001_channel1_334s.wav`) or a local `.safetensors` file.
`--model tts-tiny` runs offline on a random-weight model of the real structure (NOISE,
with `--voice random`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..audio.io import AUDIO_SUFFIXES
from ..constants import CONVERT_COMMAND, DEFAULT_SEED, FRAME_SECONDS, SAMPLE_RATE
from ..errors import UsageError
from ..models.tts import DEFAULT_CFG_COEF, DEFAULT_PADDING_BETWEEN, DEFAULT_TEMP, TtsSettings
from ..outputs import Output, StagedGroup, check_outputs, write_text
from ..runtime.tts import DEFAULT_REPO, DEFAULT_VOICE, DEFAULT_VOICE_REPO, DEMO_MODEL
from ..validation import float_arg, int_arg, seed_arg
from .device_args import check_devices
from .flags import (
    add_demo_model_arg,
    add_force_arg,
    add_lm_config_arg,
    add_lora_arg,
    add_mimi_backend_arg,
    add_offline_arg,
    add_quantized_arg,
    add_quiet_arg,
)
from .model_args import model_inputs, say_loaded
from .runner import OneLineParser, cli_main


def parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="moshi-tts",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("text", nargs="?", help="the text to speak ('-': read it from stdin)")
    ap.add_argument(
        "outfile",
        nargs="?",
        help=f"audio file to write ({SAMPLE_RATE // 1000} kHz; format from the extension); without it the audio plays on the speakers",
    )
    ap.add_argument("--text-file", help="read the text from this file")
    ap.add_argument(
        "--voice",
        help=f"voice embedding: a name in --voice-repo (e.g. {DEFAULT_VOICE}), a local "
        ".safetensors file, hf://owner/repo/file, or 'random' (seeded noise, for the demo model); "
        "for a model conditioned by an audio prefix (kyutai/tts-0.75b-en-public): a recording, a local "
        "audio file or a .wav name in --voice-repo",
    )
    ap.add_argument("--voice-repo", default=DEFAULT_VOICE_REPO, help="Hugging Face repo of the voices (%(default)s)")
    add_force_arg(ap, "OUTFILE and --transcript")
    ap.add_argument("--transcript", help="save the words with their times in the audio (.json)")
    add_quiet_arg(ap, "no progress line")
    g = ap.add_argument_group("model")
    add_demo_model_arg(g, (DEMO_MODEL,), "--hf-repo")
    g.add_argument("--hf-repo", help=f"Hugging Face repo or local folder of the TTS model ({DEFAULT_REPO})")
    add_lm_config_arg(g, "config.json of the model (default: the repo's, or the preset)")
    g.add_argument("--moshi-weight", "--moshi-weights", dest="moshi_weight", help="model weights file")
    add_lora_arg(g)
    g.add_argument("--mimi-weight", "--mimi-weights", dest="mimi_weight", help="Mimi weights file")
    g.add_argument("--tokenizer", help="SentencePiece tokenizer file")
    add_quantized_arg(
        g, f"quantize float weights to 4 or 8 bits at load (a folder {CONVERT_COMMAND} quantized loads as it is)"
    )
    g.add_argument(
        "--n-q",
        type=int_arg("--n-q", lo=1),
        help="generate only the first N codebooks (faster, lower quality; default all)",
    )
    add_mimi_backend_arg(g)
    add_offline_arg(g)
    g = ap.add_argument_group("generation (defaults as Kyutai's TTSModel)")
    g.add_argument(
        "--cfg-coef",
        type=float_arg("--cfg-coef"),
        default=DEFAULT_CFG_COEF,
        help="classifier-free guidance (%(default)s; for "
        "CFG-distilled models such as tts-1.6b-en_fr one of 1.0, 1.5, ..., 4.0)",
    )
    g.add_argument(
        "--temp",
        type=float_arg("--temp", lo=0.0),
        default=None,
        help=f"temperature, text and audio (default: the model's, else {DEFAULT_TEMP}; 0 = greedy)",
    )
    g.add_argument(
        "--seed", type=seed_arg(), default=DEFAULT_SEED, help=f"sampling seed, in [0, 2**32) (default {DEFAULT_SEED})"
    )
    g.add_argument(
        "--padding-between",
        type=int_arg("--padding-between", lo=0),
        default=DEFAULT_PADDING_BETWEEN,
        help="pad steps forced after each word (%(default)s)",
    )
    g.add_argument(
        "--max-padding",
        type=int_arg("--max-padding", lo=0),
        default=TtsSettings.max_padding,
        help="most pad steps in a row (%(default)s)",
    )
    g.add_argument(
        "--initial-padding",
        type=int_arg("--initial-padding", lo=0),
        default=TtsSettings.initial_padding,
        help="pad steps before the first word (%(default)s)",
    )
    g.add_argument(
        "--final-padding",
        type=int_arg("--final-padding", lo=0),
        default=TtsSettings.final_padding,
        help="steps generated after the last word (%(default)s)",
    )
    g.add_argument(
        "--padding-bonus",
        type=float_arg("--padding-bonus"),
        default=TtsSettings.padding_bonus,
        help="added to the pad logit: > 0 speaks slower (%(default)s)",
    )
    g.add_argument(
        "--max-steps",
        type=int_arg("--max-steps", lo=1),
        default=TtsSettings.max_steps,
        help=f"stop after this many steps ({FRAME_SECONDS * 1000:g} ms each; %(default)s)",
    )
    g = ap.add_argument_group("speakers (without OUTFILE)")
    g.add_argument("--output-device", help="output device: index or part of its name")
    g.add_argument("--list-devices", action="store_true", help="list audio devices and exit")
    return ap


def read_text(args) -> str:
    if args.text_file:
        if args.text is not None and args.outfile is None:  # `--text-file F out.wav`: the one positional is the output
            args.outfile, args.text = args.text, None
        if args.text is not None:
            raise UsageError("give the text either as an argument or with --text-file, not both")
        try:
            return Path(args.text_file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(f"text file not found: {args.text_file}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read text file {args.text_file}: {e}") from None
    if args.text == "-" or (args.text is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if args.text is None:
        raise UsageError("no text: give it as an argument, with --text-file, or on stdin")
    return args.text


def run(args) -> dict:
    from ..runtime.tts import check_voice_spec, clean_text, synthesize
    from ..weights.hub import offline_mode

    if args.list_devices:
        from ..runtime.devices import list_devices

        print(list_devices())
        return {}
    text = clean_text(read_text(args))
    if not args.voice:
        raise UsageError(
            f"--voice is required (e.g. --voice {DEFAULT_VOICE}, a local .safetensors file, "
            "or 'random' with --model tts-tiny)"
        )
    check_voice_spec(args.voice)
    out, _ = check_outputs(
        [
            Output("OUTFILE", args.outfile, AUDIO_SUFFIXES, overwrite=args.force),
            Output("--transcript", args.transcript, (".json",), overwrite=args.force),
        ],
        inputs=[("--text-file", args.text_file), ("--voice", args.voice), *model_inputs(args)],
    )
    if out is None:  # the speakers: a missing or misspelled --output-device is said before the model loads
        check_devices(args, output=True)
    with offline_mode(args.offline):
        session, voice = _load(args)
    say_loaded(session)
    temp = args.temp if args.temp is not None else float(session.cfg.lm_gen_config.get("temp", DEFAULT_TEMP))
    progress = None if args.quiet else _progress
    opts = dict(
        cfg_coef=args.cfg_coef,
        temp=temp,
        seed=args.seed,
        padding_between=args.padding_between,
        max_padding=args.max_padding,
        initial_padding=args.initial_padding,
        final_padding=args.final_padding,
        padding_bonus=args.padding_bonus,
        max_steps=args.max_steps,
        on_step=progress,
    )
    # OUTFILE and --transcript are written under temporary names and renamed together once both
    # are complete (an error or a signal before removes them both); messages name OUTFILE
    group = StagedGroup()
    with group.collect():
        if out is not None:
            from ..audio.io import AudioWriter

            with AudioWriter(out, session.sample_rate) as w:
                report = synthesize(session, text, [voice], w.write, **opts)
        else:
            from ..runtime.playback import Speaker

            speaker = Speaker(args.output_device, session.sample_rate)
            print(f"playing on {speaker.describe()}", file=sys.stderr)
            try:
                report = synthesize(session, text, [voice], speaker.write, **opts)
                speaker.drain(timeout=report.seconds + 5.0)
            finally:
                speaker.close()
        if not args.quiet:
            print("", file=sys.stderr)
        if args.transcript:
            write_text(
                args.transcript,
                json.dumps({"words": [{"word": w, "start": round(t, 3)} for w, t in report.words]}, indent=1) + "\n",
            )
    group.commit()
    ended = "" if report.end_step is not None else f" (stopped at --max-steps {args.max_steps} before the end)"
    print(
        f"{report.seconds:.2f} s of audio in {report.wall_s:.1f} s: {report.real_time_factor:.2f}x real time"
        f"{ended}" + (f" -> {out}" if out else ""),
        file=sys.stderr,
    )
    return {
        "seconds": report.seconds,
        "wall_s": report.wall_s,
        "real_time_factor": report.real_time_factor,
        "words": report.words,
    }


def _load(args):
    """The TTS model and the voice (both may come from the Hub). The voice is checked against
    the model's config before the weights are read; an embedding voice is fetched then too."""
    from ..runtime.tts import check_voice_spec, load_tts_session, load_voice

    early: list = []

    def voice_first(cfg) -> None:
        if cfg.fuse_cross:  # an embedding needs no codec: found (or refused) before the weights
            early.append(load_voice(args.voice, cfg, args.voice_repo, seed=args.seed))
        else:
            check_voice_spec(args.voice, cfg)

    session = load_tts_session(
        model=args.model,
        hf_repo=args.hf_repo,
        lm_config=args.lm_config,
        moshi_weight=args.moshi_weight,
        lora=args.lora_weight,
        mimi_weight=args.mimi_weight,
        tokenizer=args.tokenizer,
        quantize=args.quantized,
        n_q=args.n_q,
        mimi_backend=args.mimi_backend,
        seed=args.seed,
        check=voice_first,
    )
    if early:
        return session, early[0]
    return session, load_voice(args.voice, session.cfg, args.voice_repo, seed=args.seed, codec=session.codec)


def _progress(step: int) -> None:
    if step % 25 == 0 and sys.stderr.isatty():
        print(f"\rstep {step} ({step * FRAME_SECONDS:.1f} s)", end="", file=sys.stderr, flush=True)


@cli_main  # errors one line (exit 2); SIGINT/SIGTERM/SIGHUP: the partial file is removed, exit 130/143/129
def main(argv=None) -> int:
    run(parser().parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
