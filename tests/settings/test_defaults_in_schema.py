"""No default outside the schema: a setting read with a literal fallback (``.get("tta", False)``,
``OmegaConf.select(cfg, "x", default=0.5)``) is a second default that can disagree with the
schema's. The schemas' fields are the settings; this walks src with ``ast`` for such reads."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import medmtl.settings

SRC = Path(medmtl.settings.__file__).parents[1]
# reads that look like a setting's but are not one, each with its reason (file and call as
# written, so that a reformat or a moved line does not invalidate an entry)
ALLOWED = {
    ("reporting/per_image.py", "rows[0].get('split', '')"): "a predictions CSV row's column",
}


def schema_fields() -> set[str]:
    """Every field name of every settings dataclass (medmtl.settings.*)."""
    names: set[str] = set()
    for mod in pkgutil.iter_modules(medmtl.settings.__path__, "medmtl.settings."):
        for _, obj in inspect.getmembers(importlib.import_module(mod.name), inspect.isclass):
            if dataclasses.is_dataclass(obj) and obj.__module__.startswith("medmtl.settings"):
                names |= {f.name for f in dataclasses.fields(obj)}
    return names


def _literal(node: ast.expr) -> bool:
    """A constant other than None (None is "not set", which every schema can say too)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and node.value is not None


def defaults_outside_schema(tree: ast.AST, keys: set[str]) -> list[tuple[int, str]]:
    """The reads in ``tree`` that bring their own default: ``x.get("<setting>", <literal>)``
    and ``OmegaConf.select(..., default=<literal>)``."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, args = node.func.attr, node.args
        if (
            name == "get"
            and len(args) == 2
            and isinstance(args[0], ast.Constant)
            and args[0].value in keys
            and _literal(args[1])
        ) or (
            name == "select"
            and any(k.arg == "default" and _literal(k.value) for k in node.keywords)
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_no_setting_is_read_with_a_default_of_its_own():
    keys = schema_fields()
    assert {"tta", "mask_threshold", "channels_last", "eval_batch_size", "task"} <= keys
    bad, used = [], set()
    for path in sorted(SRC.rglob("*.py")):
        rel = str(path.relative_to(SRC))
        for line, call in defaults_outside_schema(ast.parse(path.read_text()), keys):
            if (rel, call) in ALLOWED:
                used.add((rel, call))
            else:
                bad.append(f"src/medmtl/{rel}:{line}: {call}")
    assert not bad, "defaults outside the schema (read the schema's instead):\n" + "\n".join(bad)
    assert used == set(ALLOWED), f"allow-list entries no longer in src: {set(ALLOWED) - used}"


def test_the_check_finds_each_form():
    keys = {"tta", "mask_threshold"}
    src = """
cfg.get("tta", False)
hp["model"].get("mask_threshold", 0.5)
OmegaConf.select(cfg, "trainer.devices", default=1)
cfg.get("tta")
cfg.get("tta", None)
cfg.get("other", 3)
cfg.get("tta", DEFAULTS.tta)
"""
    found = [call for _, call in defaults_outside_schema(ast.parse(src), keys)]
    assert found == [
        "cfg.get('tta', False)",
        "hp['model'].get('mask_threshold', 0.5)",
        "OmegaConf.select(cfg, 'trainer.devices', default=1)",
    ]
