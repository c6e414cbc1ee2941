"""Serve MathJax from the built book itself, so its math renders offline.

The MathJax 3.2.2 files come from the pinned PyPI package
django-static-mathjax (no Django needed: only its static files are read).
Only the TeX-to-HTML bundle and its fonts are copied (about 1.5 MB).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx

SCRIPT = "tex-chtml.js"
FONTS = Path("output") / "chtml" / "fonts" / "woff-v2"


def _source() -> Path:
    import mathjax  # the django-static-mathjax package

    return Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"


def _use_local(app: Sphinx, config) -> None:
    config.mathjax_path = f"mathjax/{SCRIPT}"


def _copy(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    src, dst = _source(), Path(app.outdir) / "_static" / "mathjax"
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / SCRIPT, dst / SCRIPT)
    shutil.copytree(src / FONTS, dst / FONTS, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict:
    """Point mathjax_path at a local copy and copy it after the build."""
    app.connect("config-inited", _use_local)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
