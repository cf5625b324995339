"""medmtl-adapt: adapt a trained model to a new site (scanner, hospital) with a few of its
labelled cases, and calibrate it again on that site.

medmtl-adapt model=<run|ensemble|sweep folder> site=<cases.csv> out=<new folder>
             [epochs=4] [lr=1e-3] [site_share=0.5] [calibrate_fraction=0.5] [alpha=0.1]

The site's cases (a manifest CSV: image, mask, label, and group for the patient) are split by
patient into cases to learn from and cases held back. Each member is fine-tuned from its own
weights on its own training images, replayed, and the site's (drawn site_share of the time);
its temperature and answer sets are fitted on the held-back site cases; an ensemble is built
from the adapted members and calibrated on them too; the result is exported to ONNX
(<out>/model.onnx) with <out>/adapt.json naming what was adapted with which cases
(docs/training.md, "Adapting a model to a new site").
"""

from __future__ import annotations

from medmtl.cli.options import parse, settings_main
from medmtl.settings.commands import AdaptSettings


def _run(argv: list[str]) -> int:
    settings = parse(argv, AdaptSettings)
    from medmtl.workflows.adapt import ADAPT_JSON, adapt

    record = adapt(settings)
    print(
        f"adapted {len(record['members'])} member(s) with {len(record['site']['learned_from'])} "
        f"site case(s), calibrated on {len(record['site']['held_back'])} -> {record['model']}"
        + (f", {record['export']}" if record["export"] else "")
        + f"; {settings.out}/{ADAPT_JSON}"
    )
    return 0


def main(argv: list[str] | None = None) -> None:
    settings_main("medmtl-adapt", __doc__, AdaptSettings, _run, argv,
                  synopsis="model=<run|ensemble|sweep folder> site=<cases.csv> out=<folder>")  # fmt: skip


if __name__ == "__main__":
    main()
