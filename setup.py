"""Distribution `moshi-mlx-local` (import name `moshi_mlx`): Kyutai's Moshi on MLX, offline, on a Mac
(or any MLX backend). Not PyPI's `moshi_mlx` (Kyutai's upstream): a name of its own, so that pip
never takes one for the other; both install the package `moshi_mlx`, so they cannot be
installed side by side (README)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = {}
exec((HERE / "moshi_mlx" / "version.py").read_text(), version)
tools = {}
exec((HERE / "moshi_mlx" / "cli" / "scripts.py").read_text(), tools)

setup(
    name="moshi-mlx-local",
    version=version["__version__"],
    description="Kyutai's Moshi full-duplex speech-text model on MLX: LM, Mimi codec, "
    "quantization and a real-time local audio loop.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    packages=find_packages(include=["moshi_mlx", "moshi_mlx.*"]),
    package_data={"moshi_mlx": ["configs/*.json", "web/static/*", "assets/*"]},
    python_requires=">=3.10",
    install_requires=[
        "mlx[cpu]>=0.29; sys_platform == 'linux'",
        "mlx>=0.29; sys_platform != 'linux'",
        "numpy>=1.24",
        "sentencepiece>=0.2",
        "sounddevice>=0.4",
        "huggingface-hub>=0.24",
        "tqdm>=4.60",  # progress bars (huggingface-hub brings it too)
        "soundfile>=0.12",  # audio files: its wheels bundle libsndfile (wav/flac/ogg/mp3)
        # WebRTC AEC3 for --echo-canceller aec3 (the default canceller is numpy); wheels only: macOS, Linux x86_64/aarch64
        # (glibc >= 2.28), Windows. Elsewhere the loop runs without it (docs/echo-cancellation.md)
        "livekit>=1.0; sys_platform == 'darwin' or sys_platform == 'win32' or "
        "(sys_platform == 'linux' and (platform_machine == 'x86_64' or platform_machine == 'aarch64'))",
        # the browser front end (moshi-web): HTTP + WebSocket server, and the tests' CDP client
        "aiohttp>=3.9",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "ruff>=0.6",  # the formatter and pyflakes checks (ruff.toml, tests/test_style.py)
            # the optional Mimi backend, tested where it has wheels
            "rustymimi>=0.4; python_version < '3.13' and (sys_platform == 'darwin' or platform_machine == 'x86_64')",
            # the echo bench's shoebox rooms (bench/room.py shoebox_ir), checked by the tests
            "pyroomacoustics>=0.7",
        ],
        "rustymimi": ["rustymimi>=0.4"],
        # the latency suite's chart (python -m bench.suite; the tests never need it) and the echo bench's shoebox rooms (python -m bench.aec_stress --shoebox)
        "bench": ["matplotlib>=3.5", "rustymimi>=0.4", "pyroomacoustics>=0.7"],
    },
    entry_points={
        "console_scripts": [
            f"{script} = moshi_mlx.cli.entry:{module}"
            for script, module in {**tools["TOOLS"], **tools["UPSTREAM_SCRIPTS"]}.items()
        ],
    },
)
