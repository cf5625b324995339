"""What users read is true: every sentence of docs/results.md that states a paired difference
with its Holm-corrected p-value says what the generated comparison lists (medmtl-tables'
"Δ [CI], p = … (Holm …)" lines) say for the same difference."""

from __future__ import annotations

import re

from medmtl.config import project_root

NUM = r"[+−-]?\d+\.\d+"
CI = rf"({NUM} \[{NUM}, {NUM}\])"


def _claims_and_generated() -> tuple[list[tuple[str, str]], dict[str, set[str]]]:
    text = (project_root() / "docs" / "results.md").read_text()
    flat = re.sub(r"\s*\n\s*", " ", text)  # sentences wrap over lines
    claims = re.findall(CI + r",? Holm p = (\d\.\d+)", flat)
    generated: dict[str, set[str]] = {}
    for ci, holm in re.findall(CI + r", p [=<] [\d.]+ \(Holm (\d\.\d+)\)", flat):
        generated.setdefault(ci, set()).add(holm)
    return claims, generated


def test_prose_p_values_agree_with_the_generated_lists():
    claims, generated = _claims_and_generated()
    checked = [(ci, holm) for ci, holm in claims if ci in generated]
    assert len(checked) >= 5, checked  # the λ table's sentences are among them
    wrong = [(ci, holm, sorted(generated[ci])) for ci, holm in checked if holm not in generated[ci]]
    assert not wrong, wrong


def test_no_pointer_to_a_file_outside_the_repository():
    text = (project_root() / "docs" / "results.md").read_text()
    assert "DESIGN.md" not in text
