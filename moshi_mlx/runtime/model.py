"""`Model`: what `moshi_mlx.load()` returns — the LM (in the backend's compute format), its
Mimi codec, the text tokenizer and the config — and the ways to run it: a streaming
`conversation()`, file-to-file `respond()`, or a `pipeline()` for a sound card's callbacks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..constants import FRAME_SECONDS, FRAME_SIZE, SAMPLE_RATE
from ..errors import UsageError
from .pipeline import MAX_LAG_MS, DuplexPipeline, TextEvent, make_resampler
from .stt import stt_padding
from .transcript import Transcript
from .translation import input_end, translation_end

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from ..models import LmGen
    from ..models.backend import ComputeFormat
    from ..models.config import LmConfig
    from ..models.sampling import SamplingOptions
    from ..models.lm import Lm
    from ..weights.resolve import ModelFiles
    from .codec import MimiFrameCodec
    from .conversation import Conversation
    from .transcript import ByteTokenizer, PlaceholderTokenizer, TextTokenizer

# what `Model.generator` takes besides the `SamplingOptions` names
GENERATOR_OPTIONS = ("condition", "null_condition", "text_sampler", "audio_sampler", "logits_processors")


@dataclass
class Response:
    """What `Model.respond` produced."""

    audio: np.ndarray  # the model's voice, float32 mono at `sample_rate` (empty for text-only models)
    sample_rate: int
    transcript: Transcript  # words with start/end seconds; `.text`, `.save(path)`
    tokens: list  # per LM step: (input frame, text token, audio tokens or None)
    prefix_text_token: int | None
    frames: int  # 80 ms frames answered (`Conversation.frames_answered`): the audio holds as many, before a translation's cut
    wall_s: float
    user_codes: list = field(default_factory=list)  # the user's codes of each LM step
    prefix_audio_tokens: list | None = None
    partial: bool = False  # stopped early (Ctrl-C): everything above covers the frames answered so far

    @property
    def text(self) -> str:
        return self.transcript.text

    @property
    def real_time_factor(self) -> float:
        """Seconds of audio processed per second of compute (> 1: faster than real time)."""
        return self.frames * FRAME_SIZE / SAMPLE_RATE / self.wall_s if self.wall_s > 0 else float("inf")


@dataclass
class Model:
    """The LM (its parameters), its compute format, the codec and the tokenizer.
    `close()` (or the end of a `with` block, or collecting it) gives back what it holds
    beside its arrays: on Metal, the raised wired limit (`models.backend.wired_limit`)."""

    cfg: LmConfig
    lm: Lm
    codec: MimiFrameCodec | None  # None: loaded with codec=False
    tokenizer: TextTokenizer | PlaceholderTokenizer | ByteTokenizer
    description: str
    is_demo: bool = False
    compute: ComputeFormat | None = None  # the format `prepare_lm` applied (None: as stored, eager)
    mimi_backend: str = "mlx"
    files: ModelFiles | None = None  # what the resolver found (None for the demo model)
    _active: Conversation | None = field(default=None, repr=False)
    _release: Callable[[], None] | None = field(default=None, repr=False)

    sample_rate = SAMPLE_RATE  # of the codec (the conversation resamples to and from the caller's)
    frame_size = FRAME_SIZE

    def __post_init__(self) -> None:
        if self.compute is not None and self.compute.wired_bytes and self._release is None:
            from ..models.backend import hold_wired_limit

            self._release = hold_wired_limit(self, self.compute.wired_bytes)

    def close(self) -> None:
        """Give back the wired limit this model raised (Metal); the model stays usable,
        only no longer pinned in memory."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *_) -> None:
        self.close()

    @property
    def warnings(self) -> list[str]:
        """What to know before relying on this model's speed, one line each (e.g. weights
        larger than what the GPU keeps resident: `models.backend.resident_target`)."""
        w = self.compute.memory_warning if self.compute is not None else None
        out = [w] if w else []
        if self.cfg.model_type == "stt" and not self.is_demo:
            from .stt import VAD_REPO, has_end_of_turn

            if not has_end_of_turn(self.cfg):
                out.append(
                    f"{self.files.weights.name if self.files else 'this model'} has no end-of-turn heads: "
                    f"transcripts get no end-of-turn events ({VAD_REPO} has them)"
                )
        return out

    @property
    def n_user(self) -> int:
        """Codebooks of the user's audio the LM takes per frame."""
        return self.cfg.user_q

    @property
    def speaks(self) -> bool:
        """False for text-only (speech-to-text) models."""
        return self.cfg.dep_q > 0

    def generator(
        self, options: SamplingOptions | None = None, *, voice=None, persona: str | None = None, **sampling
    ) -> LmGen:
        """Make a fresh streaming state (`LmGen`) in this model's compute format.

        Args:
            options: A `SamplingOptions`; its fields may also be given as keywords.
            voice: PersonaPlex only: the voice prompt (a preset such as NATF2, a stored `.pt`
                voice or an audio file), given before every conversation (docs/personaplex.md).
            persona: PersonaPlex only: the role, given before every conversation.
            **sampling: `SamplingOptions` fields (`temp=0.0`, `seed=3`); also condition,
                null_condition, text_sampler, audio_sampler, logits_processors.

        Returns:
            A new `LmGen`.

        Raises:
            UsageError: An unknown sampling option, a bad value, or a voice/persona for a
                model that is not PersonaPlex.
        """
        from ..models import LmGen
        from ..models.sampling import SamplingOptions
        from .workers import clear_on_thread_end

        clear_on_thread_end()  # another thread than load()'s may run the model (docs/threading.md)
        extra = {k: sampling.pop(k) for k in GENERATOR_OPTIONS if k in sampling}
        unknown = sorted(set(sampling) - set(SamplingOptions.names()))
        if unknown:
            known = ", ".join((*SamplingOptions.names(), *GENERATOR_OPTIONS))
            raise UsageError(f"unknown sampling option(s) {', '.join(unknown)}; known: {known}")
        return LmGen(
            self.lm,
            SamplingOptions.of(options, **sampling),
            compute=self.compute,
            prompt=self.system_prompt(voice, persona),
            **extra,
        )

    def system_prompt(self, voice=None, persona: str | None = None):
        """PersonaPlex's prompt (`models.persona.Prompt`) for a voice and a role; None for
        other models, which refuse a voice or a role."""
        if not getattr(self.cfg, "is_persona", False):
            if voice is not None or persona is not None:
                what = " and ".join(w for w, v in (("a voice", voice), ("a persona", persona)) if v is not None)
                raise UsageError(
                    f'{what} needs a PersonaPlex model (e.g. moshi_mlx.load("nvidia/personaplex-7b-v1")); '
                    f"this one is a {self.cfg.kind} model ({self.cfg.model_type})"
                )
            return None
        from .persona import load_voice, persona_prompt

        where = None if self.files is None else self.files.where
        mimi = None if self.codec is None else self.codec.encoder
        v = None if voice is None else load_voice(voice, mimi, where)
        return persona_prompt(self.cfg, self.tokenizer, v, persona)

    @property
    def translates(self) -> bool:
        """A speech translation model (Hibiki, Hibiki-Zero): it takes an end-of-input marker and
        answers it with a text EOS (runtime/translation.py)."""
        from .translation import is_translation_model

        return is_translation_model(self.cfg)

    def new_transcript(self) -> Transcript:
        from ..constants import TEXT_EOS_ID
        from .transcript import END_OF_PADDING_ID

        skip = (END_OF_PADDING_ID, TEXT_EOS_ID) if self.translates else (END_OF_PADDING_ID,)
        return Transcript(self.tokenizer, pad_id=self.cfg.existing_text_padding_id, skip_ids=skip)

    def end_of_input(self):
        """The end-of-input marker codes of a translation model, else None."""
        from .translation import end_of_input_codes

        return end_of_input_codes(self.cfg) if self.translates else None

    def pipeline(
        self,
        gen=None,
        *,
        input_rate: int = SAMPLE_RATE,
        output_rate: int = SAMPLE_RATE,
        max_lag_ms: float | None = MAX_LAG_MS,
        on_text: Callable[[TextEvent], None] | None = None,
        **options,
    ) -> DuplexPipeline:
        """Build the live loop for a sound card's callbacks (`push_input` / `read_output`).

        Args:
            gen: The `LmGen` to step (default: `generator()`).
            input_rate: Sample rate of the audio pushed in.
            output_rate: Sample rate of the audio read out.
            max_lag_ms: Frames older than this are skipped and late output dropped (None: off).
            on_text: Called with each `TextEvent` as the model's text comes.
            **options: The rest of DuplexPipeline's keywords (recorder, step_delay_s, ...).

        Returns:
            This model's `DuplexPipeline`, not started.

        Raises:
            UsageError: No codec, a model that takes no audio, or a bad rate or lag.
        """
        from ..validation import positive_or_off
        from ..validation import sample_rate as check_rate

        self._need_codec("the audio pipeline")
        input_rate, output_rate = check_rate("input_rate", input_rate), check_rate("output_rate", output_rate)
        max_lag_ms = positive_or_off("max_lag_ms", max_lag_ms)
        self.codec.reset()
        options.setdefault("end_of_input", self.end_of_input())
        return DuplexPipeline(
            self.codec,
            gen if gen is not None else self.generator(),
            self.n_user,
            max_lag_ms=max_lag_ms,
            in_resampler=make_resampler(input_rate, SAMPLE_RATE),
            out_resampler=make_resampler(SAMPLE_RATE, output_rate),
            output_rate=output_rate,
            on_text=on_text,
            **options,
        )

    def conversation(
        self, sample_rate: int = SAMPLE_RATE, *, max_lag_ms: float | None = None, keep_tokens: bool = False, **sampling
    ):
        """Open a streaming conversation: audio in by chunks, the model's audio and text out as they come.

        Args:
            sample_rate: The rate of the chunks fed (`feed(pcm)`, any length) and of the audio
                returned.
            max_lag_ms: None (default) answers every frame, however long it takes (files,
                tests); a bound (e.g. 400) makes it behave like the live loop when fed in real
                time: frames too old to be answered in time are skipped and late output dropped.
            keep_tokens: Keep every frame's tokens (`Conversation.tokens`).
            **sampling: `generator()`'s keywords.

        Returns:
            A `Conversation` (one open at a time per model).

        Raises:
            UsageError: No codec, a model that takes no audio, or a conversation already open.
        """
        from .conversation import Conversation

        self._need_codec("a conversation")

        if self._active is not None and not self._active.closed:
            raise UsageError(
                "this model already has an open conversation (one at a time: the codec and LM state "
                "are shared); close() it first"
            )
        conv = Conversation(
            self, self.generator(**sampling), sample_rate, max_lag_ms=max_lag_ms, keep_tokens=keep_tokens
        )
        self._active = conv
        return conv

    def transcriber(self, sample_rate: int = SAMPLE_RATE, **options):
        """Open streaming speech-to-text (models with no audio out, e.g. kyutai/stt-1b-en_fr-mlx).

        Args:
            sample_rate: The rate of the chunks fed (`feed(pcm)`, any length).
            **options: temp, top_k, top_p, seed, vad_threshold.

        Returns:
            A `runtime.stt.StreamingTranscriber`: `feed(pcm)` gives words with times and
            end-of-turn events, `flush()` at the end.

        Raises:
            UsageError: No codec, or a model that takes no audio.
        """
        from .stt import StreamingTranscriber

        self._need_codec("speech-to-text")
        return StreamingTranscriber(
            self.lm, self.codec, self.tokenizer, sample_rate=sample_rate, compute=self.compute, **options
        )

    def text_stream(self, **options):
        """Generate text with the temporal transformer (Helium; or a Moshi checkpoint's).

        Args:
            **options: temp, top_k, top_p, seed.

        Returns:
            A `runtime.textgen.TextStream`: `stream(prompt, max_tokens)` yields text as it is
            generated.
        """
        from .textgen import TextStream

        return TextStream(self.lm, self.tokenizer, compute=self.compute, **options)

    def _need_codec(self, what: str) -> None:
        """Audio in: a codec, and a model that takes the user's audio (a text model's
        conversation would silently drop everything fed to it)."""
        if self.codec is None:
            raise UsageError(f"{what} needs the Mimi codec: this model was loaded with codec=False")
        if self.cfg.user_q == 0:
            use = "runtime.tts.synthesize()" if self.cfg.kind == "text-to-speech" else "text_stream()"
            raise UsageError(
                f"{what} needs a model that listens: this one takes no audio (a {self.cfg.kind} model: use {use})"
            )

    def respond(
        self,
        audio: str | os.PathLike | np.ndarray,
        out_path: str | os.PathLike | None = None,
        *,
        sample_rate: int | None = None,
        transcript_path: str | os.PathLike | None = None,
        tokens_path: str | os.PathLike | None = None,
        progress: Callable[[int, int], None] | None = None,
        **sampling,
    ) -> Response:
        """File (or array) in, the model's answer out: as if `audio` had been spoken to it.

        Speech-to-text models get the silence their config asks for before and after.
        Translation models (Hibiki) get hibiki_zero's framing: a frame of silence before, the
        end-of-input marker after the source, then silence until the model's text EOS (at
        most `TRANSLATION_TAIL_FRAMES`: `translation.input_end`, the rule `--simulate` follows
        too); the translation (audio and transcript) is cut there.

        Outputs are checked before any work (folder, extension, not the input), written
        whole under temporary names, then renamed together (`outputs.StagedGroup`): an
        interrupt or a failed write never leaves some new files beside old ones. On Ctrl-C
        (KeyboardInterrupt) the outputs are written for the frames answered so far (only
        those that did not exist before: an existing file is left as it was) and the
        interrupt is re-raised with `.partial` (a `Response`) attached; a write that fails
        replaces no existing file either (the new ones that were written are kept).

        Args:
            audio: A file (any format, rate, channels) or a mono float array at `sample_rate`
                (integer PCM is scaled; NaN/inf are refused).
            out_path: Where to write the model's audio (its format from the extension; 24 kHz,
                as long as the input); not written for text-only models.
            sample_rate: The rate of an array `audio` (required for one).
            transcript_path: Save the words with timestamps (.json, or .txt).
            tokens_path: Save every step's tokens (.npz, `tokens.save_tokens`: read by
                `moshi-mimi decode`, `moshi-quality --codes`).
            progress: progress(frames_done, frames_total), called while the model works.
            **sampling: `generator()`'s keywords.

        Returns:
            The `Response` (audio, transcript, tokens, timing).

        Raises:
            UsageError, AudioError: Bad input or outputs, before any work.
            KeyboardInterrupt: Re-raised with `.partial` as above.
        """
        from ..audio.io import AUDIO_SUFFIXES, read_audio, write_audio
        from ..errors import AudioError
        from ..outputs import Output, StagedGroup, check_outputs
        from ..tokens import TOKENS_SUFFIXES
        from ..validation import float_pcm
        from ..validation import sample_rate as check_rate
        from .transcript import TRANSCRIPT_SUFFIXES

        if progress is not None and not callable(progress):
            raise UsageError(f"progress must be a function (frames_done, frames_total) or None, got {progress!r}")
        check_outputs(
            [
                Output("out_path", out_path, AUDIO_SUFFIXES),
                Output("transcript_path", transcript_path, TRANSCRIPT_SUFFIXES),
                Output("tokens_path", tokens_path, TOKENS_SUFFIXES),
            ],
            [("audio", audio if isinstance(audio, (str, os.PathLike)) else None)],
        )
        if isinstance(audio, (str, os.PathLike)):
            pcm = read_audio(audio)
            name = str(audio)
        else:
            from ..audio.resample import resample

            if sample_rate is None:
                raise UsageError("respond(array) needs sample_rate=")
            rate = check_rate("sample_rate", sample_rate)
            pcm = float_pcm("audio", audio).reshape(-1)
            pcm = resample(pcm, rate, SAMPLE_RATE) if rate != SAMPLE_RATE else pcm
            name = "the input"
        pcm = pcm.reshape(-1)
        if pcm.size == 0:
            raise AudioError(f"{name} contains no audio")
        prefix, suffix = stt_padding(self.cfg)
        n_in = -(-pcm.size // FRAME_SIZE)
        padded = np.concatenate(
            [
                np.zeros(int(prefix * SAMPLE_RATE), np.float32),
                pcm,
                np.zeros(n_in * FRAME_SIZE - pcm.size + int(suffix * SAMPLE_RATE), np.float32),
            ]
        )
        padded = padded[: len(padded) // FRAME_SIZE * FRAME_SIZE]
        t0 = time.perf_counter()
        conv = self.conversation(SAMPLE_RATE, keep_tokens=True, **sampling)
        chunks = []
        interrupted: KeyboardInterrupt | None = None
        end = input_end(self)  # the one rule of how input ends (also --simulate's, runtime/live.py)
        translating = end.marker
        if translating:  # hibiki_zero's warm-up: a frame of silence before the source
            padded = np.concatenate([np.zeros(FRAME_SIZE, np.float32), padded])
        try:
            # at most: a translation waits up to wait_frames for its EOS after the marker
            total = len(padded) // FRAME_SIZE + conv.tail_frames + (end.wait_frames + 1 if end.marker else 0)
            if progress:  # the total from the start: a bar knows its length before the first frame
                progress(0, total)
            for i in range(0, len(padded), 16 * FRAME_SIZE):
                chunks.append(conv.feed(padded[i : i + 16 * FRAME_SIZE], wait=False))
            if end.marker:
                chunks.append(conv.end_input())
                for i in range(0, end.wait_frames, 16):  # silence until the model's EOS, at most wait_frames
                    if conv.turn_ends:
                        break
                    chunks.append(conv.feed(np.zeros(min(16, end.wait_frames - i) * FRAME_SIZE, np.float32)))
                    if progress:
                        progress(conv.frames_stepped, total)
            chunks.append(conv.close(progress=(lambda n: progress(n, total)) if progress else None))
        except KeyboardInterrupt as e:  # keep what was answered: the outputs below are written for it
            interrupted = e
        finally:
            chunks.append(conv.abort(keep_answered=interrupted is not None))
        wall = time.perf_counter() - t0
        out = np.concatenate([c.audio for c in chunks])
        if translating:  # cut at the EOS answering the marker (hibiki_zero's decode_outputs)
            texts = [conv.generator.prefix_text_token] + [t for _, t, _ in conv.tokens]
            end = min(
                translation_end(texts, conv.turn_ends, self.cfg.existing_text_padding_id), len(out) // FRAME_SIZE
            )  # (the last positions' audio frames are not complete)
            out = out[: end * FRAME_SIZE]
            conv.transcript.cut(end * FRAME_SECONDS)
        else:
            out = out[: n_in * FRAME_SIZE]
        res = Response(
            out,
            SAMPLE_RATE,
            conv.transcript,
            conv.tokens,
            conv.generator.prefix_text_token,
            conv.frames_answered,
            wall,
            conv.user_codes,
            conv.generator.prefix_audio_tokens,
            interrupted is not None,
        )
        # interrupted: the partial outputs are written, but never over a file that exists (it may be a
        # complete answer from an earlier run)
        keep = lambda p: p is not None and not (interrupted is not None and os.path.exists(p))
        group = StagedGroup()
        with group.collect():  # written under temporary names; an interrupt meanwhile keeps every old file
            failure = _save_each(
                [
                    (lambda: write_audio(out_path, out, SAMPLE_RATE)) if keep(out_path) and self.speaks else None,
                    (lambda: conv.transcript.save(transcript_path)) if keep(transcript_path) else None,
                    (lambda: _save_tokens(tokens_path, res, self.cfg)) if keep(tokens_path) else None,
                ]
            )
        # renamed together; a failed write: none replaces an existing file (they would not match it)
        group.commit(replace=failure is None)
        if failure is not None:
            raise failure
        if interrupted is not None:
            interrupted.partial = res
            raise interrupted
        return res


def _save_tokens(path: str | os.PathLike, res: Response, cfg: LmConfig) -> None:
    """`respond`'s tokens file: every step's tokens and the codes aligned as the model saw them."""
    from ..tokens import save_tokens

    save_tokens(
        path,
        text=[t for _, t, _ in res.tokens],
        audio=[a for _, _, a in res.tokens],
        user=res.user_codes,
        frames=[f for f, _, _ in res.tokens],
        prefix_text=res.prefix_text_token,
        prefix_audio=res.prefix_audio_tokens,
        dep_q=max(cfg.dep_q, 0),
        own_delay=cfg.own_delay,
    )


def _save_each(writers) -> Exception | None:
    """Run every writer even if one fails (a full disk may still take a small transcript);
    returns the first failure (the caller raises it)."""
    failure = None
    for w in writers:
        if w is None:
            continue
        try:
            w()
        except Exception as e:  # noqa: BLE001 - raised by the caller
            failure = failure or e
    return failure


__all__ = ["Model", "Response", "GENERATOR_OPTIONS"]
