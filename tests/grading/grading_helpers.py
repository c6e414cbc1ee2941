"""Helpers shared by the grading tests (not fixtures)."""
from __future__ import annotations

import shutil
from pathlib import Path

from dlcourse.exercises import REPO

CHAPTER, NAME = "00_getting_started", "ex01_tensors"


def copy_sources(root: Path, chapter: str = CHAPTER) -> None:
    """Put the header and one chapter's MyST sources in root/solutions."""
    (root / "solutions").mkdir()
    shutil.copy(REPO / "solutions" / "header.md", root / "solutions")
    shutil.copytree(REPO / "solutions" / chapter,
                    root / "solutions" / chapter,
                    ignore=shutil.ignore_patterns("*.ipynb"))
