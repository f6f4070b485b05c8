"""The one-way flow, trainer -> store -> dashboard, checked on the import graph itself.

store imports neither trainer nor dashboard; dashboard never imports trainer (it talks to runs through the
store and starts them as `python -m trainer.run` subprocesses). Parsed with ast, so an import inside a
function body counts as much as one at the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"store": ("trainer", "dashboard"), "dashboard": ("trainer",)}


def imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def layer_files(layer: str) -> list[Path]:
    files = sorted((ROOT / layer).rglob("*.py"))
    if layer == "dashboard":
        files.append(ROOT / "run_dashboard.py")
    return files


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_import_against_the_flow(layer):
    files = layer_files(layer)
    assert len(files) > 3
    bad = {str(p.relative_to(ROOT)): sorted(imported_packages(p) & set(FORBIDDEN[layer])) for p in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from trainer.loop import train\n    import dashboard.jobs\n")
    assert imported_packages(f) == {"trainer", "dashboard"}
