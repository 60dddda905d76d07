"""The layers below cli/ know nothing of command lines (docs/architecture.md): scripts call them
with typed parameters, so the flags, the argparse namespaces and the code that reads them are
cli/'s. A module below it that imports argparse or cli/, or a function taking a namespace
`args`, fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "moshi_mlx"
BELOW_CLI = ("modules", "models", "weights", "audio", "runtime", "web")


def _modules():
    for layer in BELOW_CLI:
        yield from sorted((PACKAGE / layer).rglob("*.py"))


def _imported(tree: ast.AST, path: Path) -> list[str]:
    """Every module `path` imports (at its top or inside a function), as an absolute name."""
    package = ["moshi_mlx", *path.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] if node.module else [f"{module}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("path", list(_modules()), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_below_cli_no_module_reads_command_lines(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    wrong = [m for m in _imported(tree, path) if m in ("argparse", "moshi_mlx.cli") or m.startswith("moshi_mlx.cli.")]
    assert not wrong, f"{path.name} imports {wrong}: the flags and what reads them are cli/'s"
    takes_args = [
        f"{node.name}(args)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and any(a.arg == "args" for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs)
    ]
    assert not takes_args, f"{path.name}: {takes_args} take an argparse namespace: that is cli/'s"


def test_the_check_sees_relative_imports():
    """The walk resolves `from ..cli import x` and `from ..cli.flags import y` (else the test above
    could never fail)."""
    path = PACKAGE / "runtime" / "loading.py"
    tree = ast.parse("import argparse\nfrom ..cli.flags import a\nfrom ..cli import b\nfrom .model import Model\n")
    assert _imported(tree, path) == ["argparse", "moshi_mlx.cli.flags", "moshi_mlx.cli", "moshi_mlx.runtime.model"]
