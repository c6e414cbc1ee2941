"""Every chapter's MyST source and its executed notebook agree.

The book renders the committed ``book/NN_slug.ipynb``; nbval proves its
outputs reproduce. These tests prove that the notebook was produced from the
current ``book/NN_slug.md`` (`make chapter NB=...`), top to bottom, without
errors. A new chapter needs no change here.
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[2] / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))
IDS = [p.stem for p in CHAPTERS]
# CommonMark: a backtick fence's info string may not contain a backtick.
# Such a "fence" is not one, and silently swallows the next code cell.
BROKEN_FENCE = re.compile(r"^\s*```+\{[^}]*\}.*`")


def test_there_are_chapters():
    assert CHAPTERS, "no book/NN_slug.md chapters found"


@pytest.mark.parametrize("md", CHAPTERS, ids=IDS)
def test_notebook_matches_its_source(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"run `make chapter NB=book/{md.name}`"
    text = jupytext.read(md)
    run = nbformat.read(ipynb, as_version=4)
    assert "ipynb" in text.metadata.get("jupytext", {}).get("formats", ""), (
        f"{md.name} is not paired with its notebook (front matter formats)")
    src = [(c.cell_type, c.source) for c in text.cells]
    got = [(c.cell_type, c.source) for c in run.cells]
    assert got == src, (
        f"{ipynb.name} is out of date with {md.name}: run "
        f"`make chapter NB=book/{md.name}` and commit both")


@pytest.mark.parametrize("md", CHAPTERS, ids=IDS)
def test_notebook_ran_top_to_bottom_without_errors(md):
    run = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    code = [c for c in run.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{md.stem}.ipynb was not executed once, top to bottom, on a fresh "
        f"kernel (execution counts {counts})")
    for c in code:
        for out in c.outputs:
            assert out.output_type != "error", (
                f"cell {c.execution_count} raised {out.ename}")
            assert not (out.output_type == "stream"
                        and out.name == "stderr"), (
                f"cell {c.execution_count} wrote to stderr: {out.text!r}")


@pytest.mark.parametrize("md", CHAPTERS + [BOOK / "intro.md"],
                         ids=IDS + ["intro"])
def test_no_backtick_fence_with_backticks_in_its_title(md):
    bad = [i + 1 for i, line in enumerate(md.read_text().splitlines())
           if BROKEN_FENCE.match(line)]
    assert not bad, (
        f"{md.name} lines {bad}: a ``` fence whose title holds backticks is "
        "not a fence; use a colon fence (:::{admonition} ...)")
