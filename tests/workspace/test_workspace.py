"""The student's workspace keeps their work through a course update.

End to end, in a temporary copy of one chapter of the course (the real
``work/`` is never touched): start the workspace, answer one function,
change the exercise's source and regenerate its release as a course fix
would, sync again and grade. The answer is intact, the change is reported
with a fresh copy beside the student's notebook, and the score is right.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from dlcourse import grade, progress
from dlcourse.exercises import REPO, generate, md_to_notebook
from dlcourse.workspace import Workspace
from dlcourse.workspace import main as workspace_main

CHAPTER = "00_getting_started"
NAME = "ex01_tensors"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course folder with one chapter, its committed release and a
    grading cache of its own."""
    root = tmp_path / "course"
    (root / "solutions").mkdir(parents=True)
    shutil.copy(REPO / "solutions" / "header.md", root / "solutions")
    shutil.copytree(REPO / "solutions" / CHAPTER,
                    root / "solutions" / CHAPTER,
                    ignore=shutil.ignore_patterns("*.ipynb"))
    shutil.copy(REPO / "nbgrader_config.py", root)
    generate(root=root, only=[CHAPTER])  # its release, as `make exercises`
    monkeypatch.setenv("DLCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DLCOURSE_WORK", str(tmp_path / "nowhere"))
    return root


def points_by_test(source) -> dict[str, float]:
    return {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"][
        "points"] for c in source.cells
        if c.metadata.get("nbgrader", {}).get("grade")
        and not c.metadata["nbgrader"].get("solution")}


def grade_json(course: Path, *paths: Path) -> list[dict]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        grade.main(["--course", str(course), "--json", *map(str, paths)])
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_course_update_keeps_the_answer_and_offers_the_fix(course, tmp_path,
                                                           capsys):
    real_work = REPO / "work"
    real_before = real_work.exists() and sorted(
        (str(p), p.stat().st_mtime_ns) for p in real_work.rglob("*"))
    work = tmp_path / "work"
    ws = Workspace(work, course / "exercises")

    # 1. start: a copy of every exercise, laid out by chapter
    assert [s.state for s in ws.sync()] == ["new"]
    mine = work / CHAPTER / f"{NAME}.ipynb"
    assert sha(mine) == sha(course / "exercises" / CHAPTER / f"{NAME}.ipynb")

    # 2. the student answers one_hot
    md = course / "solutions" / CHAPTER / f"{NAME}.md"
    source = md_to_notebook(md)
    answer = grade.solution_cells(source)["one_hot"]
    points = points_by_test(source)
    nb = nbformat.read(mine, as_version=4)
    nbformat.write(grade.fill(nb, {"one_hot": answer}), mine)
    answered = sha(mine)
    assert [s.state for s in ws.sync()] == ["current"]
    assert sha(mine) == answered, "a sync rewrote the student's notebook"

    # 3. a course fix: the source changes, the release is regenerated
    text, n = re.subn(r"(?m)^(# Exercise .*)$", r"\1 (fixed)",
                      md.read_text(), count=1)
    assert n == 1, "no '# Exercise' title to fix"
    md.write_text(text)
    generate(root=course, only=[CHAPTER])

    # 4. the update step: reported, offered beside, theirs untouched
    capsys.readouterr()
    workspace_main(["--work", str(work), "--release",
                    str(course / "exercises")])
    said = capsys.readouterr().out
    assert "BEHIND" in said and f"{CHAPTER}/{NAME}.ipynb" in said, said
    [status] = ws.sync()
    assert status.state == "behind"
    assert sha(mine) == answered, "the update overwrote the student's work"
    update = status.update
    assert update.parent == mine.parent and update.name.startswith(
        f"{NAME}.update-")
    new = nbformat.read(update, as_version=4)
    assert " (fixed)" in nbformat.writes(new)
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source
             for c in new.cells}
    assert cells["one_hot"] == answer, "the answer was not carried over"

    # 5. grading: the student's notebook and the update score the same
    [theirs, fresh] = grade_json(course, mine, update)
    want = {t: p if t.startswith("test_one_hot") else 0
            for t, p in points.items()}
    for got in (theirs, fresh):
        assert got["error"] == "" and got["hidden"] is True, got
        scores = {c["grade_id"]: c["score"] for c in got["cells"]}
        assert scores == want, got
        assert got["score"] == sum(want.values()) > 0, got
        assert got["max_score"] == sum(points.values()), got
    assert sha(mine) == answered, "grading modified the student's notebook"

    # 6. taking the fix: rename the update over theirs; then all is current
    update.replace(mine)
    assert [s.state for s in ws.sync()] == ["current"]
    table = progress.table(work, course / "exercises")
    score = f"{sum(want.values()):g}/{sum(points.values()):g}"
    assert f"{CHAPTER}/{NAME}.ipynb" in table and score in table, table
    assert "edited since" in table  # graded before the rename

    real_after = real_work.exists() and sorted(
        (str(p), p.stat().st_mtime_ns) for p in real_work.rglob("*"))
    assert real_before == real_after, "the test touched the real work/"


def test_progress_lists_every_exercise_without_grading(tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("DLCOURSE_CACHE", str(tmp_path / "cache"))
    release = tmp_path / "exercises"
    for chapter in ("00_a", "01_b"):
        (release / chapter).mkdir(parents=True)
        shutil.copy(REPO / "exercises" / CHAPTER / f"{NAME}.ipynb",
                    release / chapter / f"{NAME}.ipynb")
    work = tmp_path / "work"
    (work / "00_a").mkdir(parents=True)
    shutil.copy(release / "00_a" / f"{NAME}.ipynb", work / "00_a")
    table = progress.table(work, release)
    assert "00_a/ex01_tensors.ipynb" in table
    assert "not graded yet" in table and "not started" in table, table
