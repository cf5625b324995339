"""The package's layers import downwards only (README "Layout"): a new upward import fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import medmtl

PACKAGE = Path(medmtl.__file__).parent
# lower number = lower layer; a package may import only strictly lower layers, so packages on
# one level (training, inference, reporting; data and models) never import each other
LAYER = {
    "errors": 0,
    "metrics": 0,
    "settings": 1,  # the typed settings: every layer reads them
    "config": 2,  # registers the settings' schemas with Hydra
    "io": 1,
    "preprocess": 2,
    "data": 3,
    "models": 3,
    "training": 4,
    "inference": 4,
    "reporting": 4,
    "workflows": 5,
    "bench": 6,
    "cli": 7,
}


def _imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, file) for every medmtl import in the package."""
    out = []
    for f in PACKAGE.rglob("*.py"):
        rel = f.relative_to(PACKAGE)
        pkg = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(f.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "medmtl" and len(parts) > 1 and parts[1] != pkg:
                    out.append((pkg, parts[1], str(rel)))
    return out


def test_every_package_has_a_layer():
    found = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    found |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert found <= set(LAYER), sorted(found - set(LAYER))


def test_no_import_runs_upward_or_sideways():
    imports = _imports()
    assert len(imports) > 50  # the walk sees the package's imports
    wrong = sorted(f"{file}: {a} imports {b}" for a, b, file in imports if LAYER[b] >= LAYER[a])
    assert not wrong, wrong


def test_entry_points_call_workflows():
    """The CLIs are thin: besides config, errors and the typed settings (their options) they
    call workflows (and the benchmarks)."""
    allowed = {"workflows", "bench", "config", "errors", "settings"}
    direct = sorted(f"{file}: cli imports {b}" for a, b, file in _imports() if a == "cli")
    assert not [d for d in direct if d.rsplit(" ", 1)[1] not in allowed], direct
