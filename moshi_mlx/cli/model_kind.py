"""What to run a model with, by its kind (`LmConfig.kind`): the CLI wording of a refusal
("X is not a speech-to-text model (a dialogue model: talk to it with moshi-local ...)").
The API's errors name the model's kind only; the tools add which tool runs it."""

from __future__ import annotations

TOOL_FOR_KIND = {
    "dialogue": "talk to it with moshi-local, or moshi-run-inference on a file",
    "translation": "use moshi-translate",
    "speech-to-text": "use moshi-stt",
    "text-to-speech": "use moshi-tts",
    "text": "use moshi-helium",
}


def what_it_is(cfg) -> str:
    """'a dialogue model: talk to it with moshi-local, or moshi-run-inference on a file'."""
    return f"a {cfg.kind} model: {TOOL_FOR_KIND[cfg.kind]}"
