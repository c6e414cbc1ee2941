"""The book builds offline with Jupyter Book 1, warnings as errors."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [ch["file"] for ch in part["chapters"]]
    return files


def test_every_chapter_is_in_the_toc():
    listed = set(toc_files())
    chapters = {f"book/{p.stem}" for p in (REPO / "book").glob("[0-9]*.md")}
    assert chapters <= listed, f"not in _toc.yml: {sorted(chapters - listed)}"


def test_book_builds_with_warnings_as_errors(built_book):
    proc, html = built_book  # tests/conftest.py: built once per session
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for page in toc_files():
        assert (html / f"{page}.html").exists(), f"missing page {page}"
    # the committed outputs are what the reader sees
    chapter0 = (html / "book" / "00_getting_started.html").read_text()
    assert "classes in train:" in chapter0
    assert "solutions" not in {p.name for p in html.iterdir()}
    # math is rendered by the book's own MathJax, also offline
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert "_static/mathjax/tex-chtml.js" in chapter0
    assert "cdn.jsdelivr.net/npm/mathjax" not in chapter0
