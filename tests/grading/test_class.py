"""An instructor grades a class with the standard nbgrader commands.

One assignment, eleven submissions of the kinds a real class hands in
(correct, blank, partly correct, a syntax error, an infinite loop, a deleted
and an edited test cell, megabytes of output, warnings, a corrupt file and
one that goes after the hidden tests and the other students' files), taken
from a folder of files as an LMS export gives them. From a course folder
set up like the repository's (its ``nbgrader_config.py`` plus
``dlcourse.grade.configure``): ``generate_assignment``, ``zip_collect``,
``autograde``, ``generate_feedback``, ``export``. Every score is what it
should be, no submitted file changes, and no feedback shows a hidden test.
"""
from __future__ import annotations

import csv
import hashlib
import html
import re
from pathlib import Path

import nbformat
import pytest

from dlcourse.exercises import REPO, generate, md_to_notebook, nbgrader
from dlcourse.grade import fill, solution_cells

from grading_helpers import CHAPTER, NAME, copy_sources  # noqa: E402
TIMEOUT = 15  # s per cell: the infinite loop costs 15 s, not 120

HOSTILE = '''\
import os
for what, act in [
    ("read the hidden tests", lambda: open(
        "../../../solutions/00_getting_started/ex01_tensors.ipynb").read()),
    ("read the gradebook", lambda: open("../../../gradebook.db", "rb").read()),
    ("list the other submissions", lambda: os.listdir("../../../submitted")),
    ("overwrite a classmate", lambda: open(
        "../../../submitted/correct/00_getting_started/ex01_tensors.ipynb",
        "w").write("{}")),
    ("delete the gradebook", lambda: os.remove("../../../gradebook.db")),
    ("run a program", lambda: os.system(
        "cat ../../../solutions/00_getting_started/ex01_tensors.ipynb")),
]:
    try:
        print("GOT", what, str(act())[:2000])
    except Exception as err:
        print("blocked:", what, type(err).__name__)
'''


def points_by_function(source) -> dict[str, float]:
    """Points of the test cells that follow each answer cell."""
    out, current = {}, None
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            current = meta["grade_id"]
            out[current] = 0.0
        elif meta.get("grade") and current:
            out[current] += meta.get("points", 0)
    return out


def hidden_lines(md: Path) -> list[str]:
    lines, inside = [], False
    for line in md.read_text().splitlines():
        if "### BEGIN HIDDEN TESTS" in line:
            inside = True
        elif "### END HIDDEN TESTS" in line:
            inside = False
        elif inside and len(line.strip()) > 20:
            lines.append(line.strip())
    return lines


def submissions(release, answers) -> dict[str, object]:
    """Student id -> notebook (or raw text for a corrupt file)."""
    A = answers
    wrong = ("def one_hot(y, num_classes):\n"
             "    return torch.zeros(len(y), num_classes)")
    subs = {
        "correct": fill(release, A),
        "blank": release,
        "partly": fill(release, {"one_hot": A["one_hot"]}),
        "syntax": fill(release, {**A, "one_hot":
                                 "def one_hot(y, num_classes)\n    return y"}),
        "loop": fill(release, {**A, "standardize": "while True:\n    pass"}),
        "output": fill(release, {**A, "standardize":
                                 "print(('x' * 99 + '\\n') * 50_000)\n"
                                 + A["standardize"]}),
        "warnings": fill(release, {**A, "one_hot": (
            "import warnings\n"
            + A["one_hot"].replace("def one_hot(", "def _one_hot(")
            + "\n\ndef one_hot(y, num_classes):\n"
            "    warnings.warn('a warning that is not the student fault')\n"
            "    torch.tensor(torch.zeros(1))  # PyTorch's own UserWarning\n"
            "    return _one_hot(y, num_classes)\n")}),
        "hostile": fill(release, {**A, "accuracy":
                                  A["accuracy"] + "\n\n" + HOSTILE}),
    }
    deleted = fill(release, {**A, "one_hot": wrong})
    deleted.cells = [c for c in deleted.cells if c.metadata.get(
        "nbgrader", {}).get("grade_id") != "test_one_hot"]
    subs["deleted"] = deleted
    edited = fill(release, {**A, "one_hot": wrong})
    for cell in edited.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith(
                "test_one_hot"):
            cell.source = "pass"
    subs["edited"] = edited
    # megabytes of stored output in the submitted file, too
    big = subs["output"]
    for cell in big.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "standardize":
            cell.outputs = [nbformat.v4.new_output(
                "stream", name="stdout", text="y" * 5_000_000)]
    text = nbformat.writes(subs["correct"])
    subs["corrupt"] = text[: len(text) // 2]
    return subs


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    copy_sources(root)
    config = (REPO / "nbgrader_config.py").read_text() + f'''
# --- the test's class: this folder, short cells, an LMS-style export
c.CourseDirectory.root = {str(root)!r}
c.Execute.timeout = {TIMEOUT}
c.FileNameCollectorPlugin.named_regexp = (
    r".*/(?P<student_id>[a-z]+)__(?P<file_id>[^/]+[.]ipynb)$")
from dlcourse.grade import configure
configure(c, root={str(root)!r}, memory_gb=3)
'''
    (root / "nbgrader_config.py").write_text(config)
    generate(root=root, only=[CHAPTER])  # = make exercises + nbgrader
    md = root / "solutions" / CHAPTER / f"{NAME}.md"
    release = nbformat.read(root / "exercises" / CHAPTER / f"{NAME}.ipynb",
                            as_version=4)
    answers = solution_cells(md_to_notebook(md))
    archive = root / "downloaded" / CHAPTER / "archive"
    archive.mkdir(parents=True)
    for student, nb in submissions(release, answers).items():
        text = nb if isinstance(nb, str) else nbformat.writes(nb)
        (archive / f"{student}__{NAME}.ipynb").write_text(text)

    nbgrader(["zip_collect", CHAPTER], cwd=root)
    handed_in = {p: sha(p) for p in (root / "downloaded").rglob("*.ipynb")}
    handed_in.update({p: sha(p) for p in
                      (root / "submitted").rglob("*.ipynb")})
    autograde = nbgrader(["autograde", CHAPTER], cwd=root, check=False)
    feedback = nbgrader(["generate_feedback", CHAPTER], cwd=root,
                        check=False)
    nbgrader(["export", "--to", str(root / "grades.csv")], cwd=root)
    with open(root / "grades.csv") as f:
        grades = {row["student_id"]: row for row in csv.DictReader(f)}
    return dict(root=root, md=md, release=release, handed_in=handed_in,
                autograde=autograde, feedback=feedback, grades=grades,
                points=points_by_function(md_to_notebook(md)))


def autograded(root: Path, student: str):
    return nbformat.read(root / "autograded" / student / CHAPTER
                         / f"{NAME}.ipynb", as_version=4)


def test_every_score_is_what_it_should_be(graded_class):
    g, pts = graded_class["grades"], graded_class["points"]
    full = sum(pts.values())
    want = {
        "correct": full, "blank": 0, "partly": pts["one_hot"],
        "syntax": full - pts["one_hot"], "loop": full - pts["standardize"],
        "deleted": full - pts["one_hot"], "edited": full - pts["one_hot"],
        "output": full, "warnings": full, "hostile": full, "corrupt": 0,
    }
    got = {s: float(g[s]["score"]) if s in g else None for s in want}
    assert got == want, (got, graded_class["autograde"].stderr[-3000:])
    assert all(float(g[s]["max_score"]) == full for s in g)


def test_the_corrupt_file_is_reported_and_the_others_graded(graded_class):
    log = graded_class["autograde"].stdout + graded_class["autograde"].stderr
    assert "corrupt" in log and "error" in log.lower()
    root = graded_class["root"]
    assert not (root / "autograded" / "corrupt").exists()
    graded = {p.name for p in (root / "autograded").iterdir()}
    assert len(graded) == 10, graded


def test_the_loop_times_out_in_its_cell_only(graded_class):
    nb = autograded(graded_class["root"], "loop")
    errors = {c.metadata["nbgrader"]["grade_id"]: o.ename
              for c in nb.cells if "nbgrader" in c.metadata
              for o in c.get("outputs", []) if o.output_type == "error"}
    assert errors["standardize"] in ("CellTimeoutError", "KeyboardInterrupt")
    assert "test_one_hot" not in errors and "test_accuracy" not in errors


def test_deleted_and_edited_test_cells_are_restored(graded_class):
    release_tests = {c.metadata["nbgrader"]["grade_id"]: c.source
                     for c in graded_class["release"].cells
                     if c.metadata.get("nbgrader", {}).get("grade")
                     and not c.metadata["nbgrader"].get("solution")}
    for student in ("deleted", "edited"):
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c
                 for c in autograded(graded_class["root"], student).cells}
        assert "test_one_hot" in cells
        assert "pass" != cells["test_one_hot"].source.strip()
        assert release_tests["test_one_hot"].strip().splitlines()[-1] in (
            cells["test_one_hot"].source)


def test_hostile_notebook_was_fenced_in(graded_class):
    nb = autograded(graded_class["root"], "hostile")
    text = "".join(o.get("text", "") for c in nb.cells
                   for o in c.get("outputs", []))
    assert "GOT" not in text, text[:3000]
    assert text.count("blocked:") == 6, text[:3000]


def test_no_submitted_file_changed(graded_class):
    changed = [str(p) for p, h in graded_class["handed_in"].items()
               if not p.exists() or sha(p) != h]
    assert not changed
    # the LMS export, zip_collect's extracted copy, and submitted/
    assert len(graded_class["handed_in"]) == 3 * 11


def test_feedback_shows_no_hidden_test(graded_class):
    root = graded_class["root"]
    pages = sorted((root / "feedback").rglob("*.html"))
    assert len(pages) == 10, graded_class["feedback"].stderr[-2000:]
    # lines of the hidden tests that the release does not show anyway
    shown = "\n".join(c.source for c in graded_class["release"].cells)
    secrets = [s for s in hidden_lines(graded_class["md"])
               if s not in shown]
    assert secrets, "the exercise has no hidden tests to hide"
    for page in pages:
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        text = re.sub(r"\s+", " ", text)
        leaked = [s for s in secrets if re.sub(r"\s+", " ", s) in text]
        assert not leaked, f"{page}: {leaked[:3]}"
    # the hints of failing hidden tests still reach the student
    partly = (root / "feedback" / "partly" / CHAPTER / f"{NAME}.html")
    assert "not shown" in partly.read_text()
