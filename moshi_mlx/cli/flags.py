"""The flags every command-line tool shares, each defined once so that it is spelled, typed
and explained the same way everywhere (the convention table: docs/cli.md; enforced by
tests/cli/test_conventions.py, which walks every CLI's parser).

A tool adds the ones it has a use for; a flag that would do nothing in a tool is left out
(Helium has no codec, so no `--mimi-*`).
"""

from __future__ import annotations

import argparse

from ..constants import MIMI_BACKENDS

QUANTIZATIONS = (4, 8)
MIMI_BACKEND_HELP = "codec implementation (auto: MLX on a GPU, rustymimi on a CPU when installed)"
OFFLINE_HELP = "never ask the Hub: files come from the local Hugging Face cache (like HF_HUB_OFFLINE=1)"

Group = argparse.ArgumentParser | argparse._ArgumentGroup


def add_quantized_arg(g: Group, help: str) -> None:
    """`-q {4,8}` (long forms `--quantized`, upstream's, and `--quantize`): the model's
    quantization. What it selects is the tool's: a repo (run CLIs), bits (convert)."""
    g.add_argument(
        "-q", "--quantized", "--quantize", dest="quantized", type=int, choices=QUANTIZATIONS, metavar="{4,8}", help=help
    )


def add_lm_config_arg(g: Group, help: str) -> None:
    """`--lm-config` (upstream moshi.server's `--config-path` too): the LM's config.json or a
    preset; what the default is depends on the tool, so the help is its own."""
    g.add_argument("--lm-config", "--config-path", dest="lm_config", help=help)


LORA_HELP = (
    "LoRA adapters of a fine-tune (moshi-finetune's lora.safetensors: a local file, or a name in the "
    "repo), fused into the LM weights at load; the config (the repo's or --lm-config) must be the "
    "fine-tune's, with lora: true (default: the adapters its config names beside it)"
)


def add_lora_arg(g: Group) -> None:
    """`--lora-weight PATH` (upstream moshi.server's spelling): a LoRA fine-tune's adapters,
    fused at load. There is no `--no_fuse_lora`: the adapters are always fused (docs/lm.md)."""
    g.add_argument("--lora-weight", "--lora-weights", dest="lora_weight", metavar="PATH", help=LORA_HELP)


def add_mimi_backend_arg(g: Group, default: str = "auto", *aliases: str) -> None:
    """`--mimi-backend {auto,mlx,rustymimi}`; an explicit `rustymimi` that is not installed is
    refused by the loader (never silently MLX)."""
    g.add_argument(
        "--mimi-backend",
        *aliases,
        dest="mimi_backend",
        choices=MIMI_BACKENDS,
        default=default,
        help=f"{MIMI_BACKEND_HELP}; default {default}",
    )


def add_offline_arg(g: Group) -> None:
    """`--offline`: in every tool that can reach the Hugging Face Hub."""
    g.add_argument("--offline", action="store_true", help=OFFLINE_HELP)


def add_force_arg(g: Group, what: str) -> None:
    """`--force`: replace existing outputs (never an input); without it an existing output is
    refused before any work."""
    g.add_argument("--force", action="store_true", help=f"replace {what} if it exists (never done otherwise)")


def add_quiet_arg(g: Group, what: str = "no progress bar") -> None:
    g.add_argument("--quiet", action="store_true", help=what)


def add_max_lag_arg(g: Group, bound: str) -> None:
    """`--max-lag-ms MS|off` of the live tools (moshi-local, moshi-translate, moshi-web): one
    parser, so `off` and the range check are the same in all three; `bound`: what is bounded."""
    from ..runtime.pipeline import MAX_LAG_MS
    from ..validation import positive_or_off_arg

    g.add_argument(
        "--max-lag-ms",
        type=positive_or_off_arg("--max-lag-ms"),
        default=MAX_LAG_MS,
        help=f'bound on {bound} (default %(default)g; "off": never skip or drop frames)',
    )


def add_demo_model_arg(g: Group, choices: tuple[str, ...], replaces: str) -> None:
    """`--model NAME`: an offline demo model (seeded random weights of the real architecture
    at tiny size; it produces NOISE) in place of `replaces`."""
    g.add_argument(
        "--model",
        choices=choices,
        help=f"offline demo model instead of {replaces}: seeded random weights of the real architecture "
        "at tiny size, made in memory, no download; it produces NOISE (smoke tests, benchmarks, "
        "offline demos)",
    )
