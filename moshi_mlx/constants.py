"""The numbers and names every layer agrees on, defined once.

Mimi's stream: 24 kHz mono, one 1920-sample (80 ms) frame per LM step. The default model
is the `moshiko` preset (its Hub repos per quantization are in models/config.py `PRESETS`);
the file names below are those of Kyutai's published repos. Nothing here imports anything,
so every layer (and `import moshi_mlx`) can read it for free.
"""

SAMPLE_RATE = 24_000  # Hz, Mimi's audio rate
FRAME_SIZE = 1920  # samples per Mimi frame = per LM step
FRAME_SECONDS = FRAME_SIZE / SAMPLE_RATE  # 0.08 s
FRAME_RATE = SAMPLE_RATE / FRAME_SIZE  # 12.5 Hz: LM steps (Mimi frames) per second
MIMI_CODEBOOKS = 8  # of Mimi's 32, those Moshi's models use: a lone Mimi's default (load_mimi, moshi-mimi -n)

DEFAULT_PRESET = "moshiko"  # the model `moshi_mlx.load()` and the CLIs use when given no source
MIMI_REPO = "kyutai/moshiko-mlx-q8"  # where a lone Mimi is fetched from (every moshiko repo holds it)
CONFIG_NAME = "config.json"
LM_NAME = "model.safetensors"  # an LM repo's weights when its config.json names none
MIMI_NAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
TOKENIZER_NAME = "tokenizer_spm_32k_3.model"
LORA_NAME = "lora.safetensors"  # a moshi-finetune folder's adapters when its config.json names none
VOICES_NAME = "voices.tgz"  # PersonaPlex's voice presets, beside its weights (nvidia/personaplex-7b-v1)
TEXT_EOS_ID = 2  # the text stream's end of sequence in Kyutai's tokenizers (a translation model's "done")
# the converter as every message names it: its console script (docs/cli.md: usage lines name the
# console script; cli/scripts.py lists it, tests/cli/test_conventions.py checks the two agree)
CONVERT_COMMAND = "moshi-convert"
# the codec implementations: load(mimi_backend=...) checks against them, --mimi-backend offers them
MIMI_BACKENDS = ("auto", "mlx", "rustymimi")
DEMO_MODEL = "random-tiny"  # seeded random weights at tiny size, made in memory: offline, produces noise
# The one default seed: sampling (CLIs, `moshi_mlx.load`, `LmGen`, the web page) and the demo
# model's random weights, so a command and a script give the same tokens (upstream's value)
DEFAULT_SEED = 299_792_458

__all__ = [
    "SAMPLE_RATE",
    "FRAME_SIZE",
    "FRAME_SECONDS",
    "FRAME_RATE",
    "MIMI_CODEBOOKS",
    "DEFAULT_PRESET",
    "MIMI_REPO",
    "CONFIG_NAME",
    "LM_NAME",
    "MIMI_NAME",
    "TOKENIZER_NAME",
    "LORA_NAME",
    "VOICES_NAME",
    "TEXT_EOS_ID",
    "CONVERT_COMMAND",
    "MIMI_BACKENDS",
    "DEMO_MODEL",
    "DEFAULT_SEED",
]
