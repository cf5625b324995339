"""Every package src imports is declared in pyproject.toml (none arrives only because another
package happens to need it), and the ones whose internals medmtl patches are pinned."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
OURS = ("medmtl", "hydra_plugins")


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised as pip compares them."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    project = PYPROJECT["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {_name(r): r for r in requirements}


def _imported() -> dict[str, set[str]]:
    """Top-level module -> the src files that import it (also inside functions)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


@functools.cache
def _installed() -> dict[str, list[str]]:
    return md.packages_distributions()


def _distributions(module: str, files: set[str]) -> list[str]:
    if module == "hydra_plugins":  # a namespace: ours and hydra-submitit-launcher's
        return ["hydra-submitit-launcher"] if any("medmtl_slurm" in f for f in files) else []
    return [_name(d) for d in _installed().get(module, [])]


def test_every_imported_package_is_declared():
    declared = _declared()
    imported = _imported()
    third_party = {m: f for m, f in imported.items() if m not in sys.stdlib_module_names}
    assert {"torch", "hydra", "requests", "yaml", "tqdm"} <= set(third_party)  # the walk works
    undeclared = {}
    for module, files in third_party.items():
        if module in OURS[:1]:
            continue
        dists = _distributions(module, files)
        assert dists or module == "hydra_plugins", f"{module}: no installed distribution"
        if dists and not any(d in declared for d in dists):
            undeclared[module] = (dists, sorted(files)[:2])
    assert not undeclared, f"imported by src but not in pyproject.toml: {undeclared}"


def test_patched_launchers_are_pinned_to_the_tested_versions():
    declared = _declared()
    for name in ("submitit", "hydra-submitit-launcher"):
        pin = declared[name]
        assert "==" in pin, pin
        assert pin.split("==")[1] == md.version(name), (pin, md.version(name))


def test_lower_bounds_hold_for_the_installed_versions():
    """The installed (tested) version of each core dependency meets its declared bound: a bound
    raised past what is installed would be untested."""
    from packaging.requirements import Requirement

    for text in PYPROJECT["project"]["dependencies"]:
        req = Requirement(text)
        assert req.specifier.contains(md.version(req.name), prereleases=True), (
            text,
            md.version(req.name),
        )
