"""The console scripts' entry points (`moshi_mlx.cli.entry:local`, ...; the list is
cli/scripts.py): each imports its tool under the runner's signal rules (`launch`: a Ctrl-C
during the import of MLX is one line too), then runs it. `python -m moshi_mlx.NAME`
(moshi_mlx/NAME.py; local, local_web and run_inference are upstream's names) does the same;
upstream's console scripts are installed too (`scripts.UPSTREAM_SCRIPTS`). The runner itself is imported by
`early.run`, under its own handler: nothing here imports it."""

import functools

from .early import run
from .scripts import TOOLS


def __getattr__(name: str):
    if name in TOOLS.values():
        return functools.partial(run, name, program=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
