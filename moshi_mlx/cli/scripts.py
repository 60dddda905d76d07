"""Console script -> tool module (moshi_mlx/cli/NAME.py): the one list, read by setup.py
(entry points `moshi_mlx.cli.entry:NAME`) and the tests. Data only: setup.py reads it
without importing the package."""

TOOLS = {
    "moshi-local": "local",
    "moshi-run-inference": "run_inference",
    "moshi-convert": "convert",
    "moshi-quality": "quality",
    "moshi-tts": "tts",
    "moshi-stt": "stt",
    "moshi-helium": "helium",
    "moshi-web": "local_web",
    "moshi-mimi": "mimi",
    "moshi-translate": "translate",
}
