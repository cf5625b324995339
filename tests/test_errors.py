"""One way to shorten a list of problems in a message."""

from medmtl.errors import summarize


def test_summarize_names_the_first_and_counts_the_rest():
    assert summarize(["a", "b"]) == "a; b"
    assert summarize([f"f{i}" for i in range(7)], 3) == "f0; f1; f2 (and 4 more)"
    assert summarize([]) == ""
