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

# upstream moshi_mlx's console scripts (its pyproject.toml) not in TOOLS under the same name:
# installed too, as the same tool (`moshi-local-web` = `moshi-web`). Its module names need no
# entry here: moshi_mlx/local.py, local_web.py and run_inference.py are ours too
UPSTREAM_SCRIPTS = {"moshi-local-web": "local_web"}
