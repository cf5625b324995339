"""What users read is true: every paired difference a sentence of docs/results.md states — a
signed difference with its CI, or with its Holm-corrected p — is what a generated comparison
list of ``medmtl-tables`` (its "- A vs B (...): metric Δ [CI], p = … (Holm …)" lines, most of
them written into the file by ``medmtl-tables into=docs/results.md:<section>``) says.

Sections whose evaluation folders were not kept are marked ``<!-- unchecked:start -->`` …
``<!-- unchecked:end -->`` with a visible note; their claims are counted, and the count may only
go down."""

from __future__ import annotations

import re

from medmtl.config import project_root

NUM = r"[+−-]?\d\.\d+"
SIGNED = r"[+−-]\d\.\d+"
# a signed difference, then its CI and/or its Holm p in the forms the prose uses:
# "+0.071 [+0.033, +0.112] (Holm p = 0.013)", "+0.060 (Holm 0.022)", "Δ [CI], p = … (Holm …)",
# "Δ [CI], Holm p = …", "Δ, Holm 0.004"
CLAIM = re.compile(
    rf"(?P<delta>{SIGNED})(?P<ci> \[{NUM}, {NUM}\])?"
    rf"(?:,? p [=<] [\d.]+)?(?:,? \(?Holm (?:p )?(?P<op>[=<] )?(?P<holm>\d\.\d+))?"
)
GENERATED = re.compile(r"^- .+ vs .+\): ")
# claims in the sections marked unchecked (evaluations not kept); may only go down
UNCHECKED_AT_MOST = 12


def _split() -> tuple[list[str], str, str]:
    """(generated comparison segments, prose to check, prose marked unchecked)."""
    text = (project_root() / "docs" / "results.md").read_text()
    segments, prose, unchecked = [], [], []
    inside = False
    for line in text.splitlines():
        if "<!-- unchecked:start -->" in line:
            inside = True
        elif "<!-- unchecked:end -->" in line:
            inside = False
        if GENERATED.match(line):
            segments += line.split("): ", 1)[1].split("; ")
        elif not line.lstrip().startswith("|"):  # tables are generated or measured cells
            (unchecked if inside else prose).append(line)
    flat = [re.sub(r"\s*\n\s*", " ", "\n".join(p)) for p in (prose, unchecked)]
    return segments, flat[0], flat[1]


def _claims(text: str) -> list[re.Match]:
    return [m for m in CLAIM.finditer(text) if m["ci"] or m["holm"]]


def _backed(claim: re.Match, segments: list[str]) -> bool:
    want = claim["delta"] + (claim["ci"] or " [")
    holm = f"(Holm {claim['op'] or ''}{claim['holm']})".replace("= ", "")
    return any(want in s and (not claim["holm"] or holm in s) for s in segments)


def test_every_paired_difference_in_the_prose_is_in_a_generated_list():
    segments, prose, _ = _split()
    claims = _claims(prose)
    assert len(segments) > 100 and len(claims) >= 30, (len(segments), len(claims))
    unbacked = [m.group(0) for m in claims if not _backed(m, segments)]
    assert not unbacked, unbacked


def test_the_unchecked_sections_say_so_and_do_not_grow():
    text = (project_root() / "docs" / "results.md").read_text()
    assert text.count("<!-- unchecked:start -->") == text.count("<!-- unchecked:end -->")
    for block in re.findall(r"<!-- unchecked:start -->(.*?)<!-- unchecked:end -->", text, re.S):
        assert "were not kept" in block  # the visible note
    assert len(_claims(_split()[2])) <= UNCHECKED_AT_MOST


def test_no_pointer_to_a_file_outside_the_repository():
    text = (project_root() / "docs" / "results.md").read_text()
    assert "DESIGN.md" not in text
