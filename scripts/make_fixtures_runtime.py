"""Regenerate tests/fixtures/runtime/run_inference_random_tiny.json: the tokens that
`run_inference --model random-tiny --seed 7 --temp 0.8 --temp-text 0.7` produces on a fixed input.

No oracle is involved (random-tiny is our own seeded demo model); the fixture pins the
behaviour so that an unintended change of sampling, alignment or the pipeline shows up.
Run with the project venv: .venv/bin/python scripts/make_fixtures_runtime.py
"""

import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from moshi_mlx.cli.run_inference import main

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "runtime" / "run_inference_random_tiny.json"


def modulated_sine(seconds: float = 3.0, rate: int = 24000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 1.3 * t)).astype(np.float32)


def main_() -> None:
    with tempfile.TemporaryDirectory() as d:
        sf.write(f"{d}/in.wav", modulated_sine(), 24000)
        assert (
            main(
                [
                    f"{d}/in.wav",
                    "--model",
                    "random-tiny",
                    "--seed",
                    "7",
                    "--temp",
                    "0.8",
                    "--temp-text",  # --temp alone sets the text's too (upstream's meaning); the fixture's is 0.7
                    "0.7",
                    "--save-tokens",
                    f"{d}/tok.npz",
                    "--quiet",
                ]
            )
            == 0
        )
        z = np.load(f"{d}/tok.npz")
        data = {
            "_how": "scripts/make_fixtures_runtime.py: run_inference --model random-tiny --seed 7 --temp 0.8 --temp-text 0.7 "
            "on a 3 s modulated 220 Hz sine",
            "text": z["text"].tolist(),
            "audio": z["audio"].tolist(),
        }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main_()
