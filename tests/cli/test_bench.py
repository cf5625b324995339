"""The benchmark commands run and write their section (timings are not asserted)."""

from __future__ import annotations

import re

from medmtl.cli.bench import main


def test_preprocess_bench_writes_its_section(tmp_path):
    out = tmp_path / "bench.md"
    out.write_text("# title\n\nkept text\n")
    assert (
        main(
            [
                "preprocess",
                "--out",
                str(out),
                "--repeats",
                "1",
                "--busi-image",
                str(tmp_path / "none.png"),
            ]
        )
        == 0
    )
    text = out.read_text()
    assert "kept text" in text and "<!-- preprocess:start -->" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and " ms (" in ln]
    assert len(rows) == 8
    for row in rows:
        assert float(re.search(r"\| ([0-9.]+) ms", row).group(1)) > 0
    main(
        [
            "preprocess",
            "--out",
            str(out),
            "--repeats",
            "1",
            "--busi-image",
            str(tmp_path / "none.png"),
        ]
    )
    assert out.read_text().count("<!-- preprocess:start -->") == 1  # replaced, not appended
