"""One browser conversation on the live loop's pipeline, through the public model API.

The server holds one loaded `Model` (`moshi_mlx.load()`) for its whole life and starts a
`Conversation` per WebSocket connection: a fresh generator (`Model.generator`, with that
connection's sampling settings: new KV caches, token history and random generator) and a
fresh pipeline (`Model.pipeline`, which also resets Mimi's streaming state), so no
connection inherits anything from the previous one.

The browser is the sound card: its audio clock drives the pipeline. Each block of
microphone samples is pushed in and a block of the same length is read out for playback
(`feed`), exactly like a duplex audio callback, so the live loop's lag control (late input
skipped, late output dropped at "playback") works as in `moshi-local`. That is why this uses
`Model.pipeline` rather than `Model.conversation`, whose `feed` returns whatever is ready
(variable lengths, no clock) for callers that are not a sound card.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ..models.sampling import SamplingOptions
from ..runtime.pipeline import MAX_LAG_MS, TextEvent
from ..runtime.translation import SilencePolicy
from ..constants import FRAME_SECONDS
from .protocol import Settings

SETTING_NAMES = tuple(f.name for f in fields(Settings))


def generator_settings(gen) -> Settings:
    """The settings an `LmGen` runs with (the command line's flags over the model's defaults)."""
    t, a = gen.text_sampler, gen.audio_sampler
    return Settings(
        temp=a.temp,
        temp_text=t.temp,
        top_k=a.top_k,
        top_k_text=t.top_k,
        top_p=a.top_p,
        top_p_text=t.top_p,
        seed=int(gen.seed),
    )


@dataclass
class Engine:
    """The loaded model, shared by all conversations (one at a time).

    model: a `runtime.model.Model` (or anything with its `generator`, `pipeline`,
    `new_transcript`, `description` and `is_demo`); defaults: the page's initial settings;
    fixed: the other generator options from the command line (e.g. cfg_coef), for every
    conversation."""

    model: object
    defaults: Settings
    fixed: dict = field(default_factory=dict)
    voices: tuple[str, ...] | None = None  # PersonaPlex: the voice names a client may choose (None: no prompt)
    # the name the page shows for the command line's voice file -> that file (the page never sees a local path)
    voice_files: dict = field(default_factory=dict)

    @classmethod
    def from_model(cls, model, options: SamplingOptions | None = None, **sampling) -> "Engine":
        """options, sampling: the command line's `sampling_kwargs` (a `SamplingOptions` and/or
        its fields as keywords, PersonaPlex's voice / persona)."""
        persona = {k: sampling.pop(k) for k in ("voice", "persona") if k in sampling}
        options = SamplingOptions.of(options, **sampling)
        defaults = generator_settings(model.generator(options, **persona))
        voices, voice_files = None, {}
        if getattr(getattr(model, "cfg", None), "is_persona", False):
            from ..runtime.persona import preset_names

            # the presets the model's voices.tgz holds (none for a folder without it); the command
            # line's --voice is offered too
            files = getattr(model, "files", None)
            presets = preset_names(None if files is None else files.where)
            given = (_shown_voice(str(persona["voice"]), presets, voice_files),) if persona.get("voice") else ()
            voices = presets + tuple(v for v in given if v not in presets)
        fixed = {**options.given(), **persona}
        return cls(model, defaults, {k: v for k, v in fixed.items() if k not in SETTING_NAMES}, voices, voice_files)

    @property
    def persona(self) -> str | None:
        """The role the page's box starts with: the command line's --persona, else the role a
        conversation gets when none is given (NVIDIA's default); None for other models."""
        if self.voices is None:
            return None
        if "persona" in self.fixed:
            return self.fixed["persona"]
        from ..runtime.persona import default_persona

        return default_persona(getattr(self.model, "tokenizer", None))

    @property
    def voice_name(self) -> str | None:
        """The command line's voice as the page names it (a file by its name, not its path)."""
        voice = self.fixed.get("voice")
        shown = {spec: name for name, spec in self.voice_files.items()}
        return None if voice is None else shown.get(str(voice), str(voice))

    def prompt(self, chosen: dict | None) -> dict | None:
        """The client's voice / persona (`protocol.validate_prompt`) as generator keywords: a
        voice name the page was shown for a file is that file."""
        if not chosen or chosen.get("voice") is None:
            return chosen
        return {**chosen, "voice": self.voice_files.get(chosen["voice"], chosen["voice"])}

    @property
    def description(self) -> str:
        return self.model.description

    @property
    def is_demo(self) -> bool:
        return bool(getattr(self.model, "is_demo", False))


def _shown_voice(spec: str, presets: tuple[str, ...], files: dict) -> str:
    """What the page shows for the command line's --voice: a preset by its name, a file by its
    file name (its folders are the server's business), noted in `files` to find it back."""
    from ..runtime.persona import is_preset_name

    if is_preset_name(spec):
        return spec
    name = Path(spec).name or spec
    if name in presets:  # a file named like a preset (no suffix): not the preset
        name = f"{name} (--voice)"
    files[name] = spec
    return name


def to_float(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def to_int16(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


class Conversation:
    """A running conversation. `on_text(piece, seconds)` is called from the LM thread with
    each printable piece of Moshi's text; keep it cheap (hand it to the event loop)."""

    def __init__(
        self,
        engine: Engine,
        sample_rate: int,
        settings: Settings,
        *,
        on_text: Callable[[str, float], None],
        max_lag_ms: float | None = MAX_LAG_MS,
        step_delay_s: float = 0.0,
        prompt: dict | None = None,
    ):
        model = engine.model
        self.settings = settings
        self.sample_rate = sample_rate
        self._on_text = on_text
        # prompt: the client's voice / persona (PersonaPlex) over the command line's
        self.generator = model.generator(**{**engine.fixed, **(engine.prompt(prompt) or {})}, **settings.as_dict())
        self.transcript = model.new_transcript()
        # a translation model (Hibiki): a pause ends the speaker's turn, as in moshi-translate
        turns = {"end_policy": SilencePolicy()} if getattr(model, "translates", False) else {}
        self.pipe = model.pipeline(
            self.generator,
            input_rate=sample_rate,
            output_rate=sample_rate,
            max_lag_ms=max_lag_ms,
            on_text=self._text,
            step_delay_s=step_delay_s,
            **turns,
        ).start()

    def _text(self, ev: TextEvent) -> None:
        piece = self.transcript.add(ev.token, ev.frame)
        if piece:
            self._on_text(piece, (ev.frame + 1) * FRAME_SECONDS)
        if ev.end_of_turn:  # the translation of a turn is complete: the page starts a new line
            self._on_text("\n", (ev.frame + 1) * FRAME_SECONDS)

    def feed(self, pcm: bytes) -> bytes:
        """A block of the client's int16 microphone PCM in; the same length of Moshi out."""
        x = to_float(pcm)
        self.pipe.push_input(x)
        return to_int16(self.pipe.read_output(len(x)))

    @property
    def error(self) -> BaseException | None:
        return self.pipe.error if self.pipe.failed.is_set() else None

    def stats(self) -> dict:
        s = self.pipe.stats
        recent = list(s.step_ms)[-20:]
        lag = s.last_delay_ms
        return {
            "lag_ms": None if lag != lag else round(lag, 1),
            "steps": s.frames_stepped,
            "skipped": s.frames_skipped,
            "trimmed": s.frames_trimmed + s.frames_settled,
            "overflows": s.input_overflows,
            "step_ms": round(float(np.median(recent)), 2) if recent else None,
        }

    def close(self) -> None:
        """Stop the workers, dropping queued work (the client is gone), and wait until every
        one has returned (blocking: call it off the event loop), so the model is free for
        the next conversation."""
        self.pipe.abort(timeout=None)
