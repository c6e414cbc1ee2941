"""The student's grader: clear words for every failure, never a traceback.

``python -m dlcourse.grade`` on one exercise (``00_getting_started/
ex01_tensors``) in a temporary course: a truncated file, a notebook that is
no exercise, a deleted and an edited test cell, an infinite loop (a short
per-cell limit), a kernel that dies, warnings during a correct answer, and
a student who has only ``exercises/``. Plus the kernel's fence and the
feedback filter on their own, without a kernel.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from dlcourse import grade
from dlcourse.exercises import REPO, generate, md_to_notebook

from grading_helpers import CHAPTER, NAME, copy_sources  # noqa: E402


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = grade.main([str(a) for a in args])
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue()


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course (solutions/ and its release) and a grading cache."""
    root = tmp_path_factory.mktemp("course")
    copy_sources(root)
    shutil.copy(REPO / "nbgrader_config.py", root)
    generate(root=root, only=[CHAPTER])
    return root


@pytest.fixture(autouse=True)
def cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DLCOURSE_CACHE",
                       str(tmp_path_factory.getbasetemp() / "cache"))


def release_of(course: Path):
    return nbformat.read(course / "exercises" / CHAPTER / f"{NAME}.ipynb",
                         as_version=4)


def answers_of(course: Path) -> dict[str, str]:
    md = course / "solutions" / CHAPTER / f"{NAME}.md"
    return grade.solution_cells(md_to_notebook(md))


def student_file(tmp_path: Path, nb) -> Path:
    path = tmp_path / "work" / CHAPTER / f"{NAME}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(nb, str):
        path.write_text(nb)
    else:
        nbformat.write(nb, path)
    return path


# --- no kernel needed -------------------------------------------------------

def test_truncated_notebook_gets_words_not_a_traceback(course, tmp_path):
    text = nbformat.writes(release_of(course))
    path = student_file(tmp_path, text[: len(text) // 2])
    code, out = run("--course", course, path)
    assert code == 1
    assert "is not a valid notebook" in out and str(path) in out, out
    assert "Revert Notebook to Checkpoint" in out and "Traceback" not in out


def test_a_notebook_that_is_no_exercise(course, tmp_path):
    path = tmp_path / "mine" / "notes.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), path)
    code, out = run("--course", course, path)
    assert code == 1 and "is not one of the course's exercises" in out, out
    assert "Traceback" not in out


def test_restore_locked_cells_says_what_it_restored(course):
    release = release_of(course)
    nb = copy.deepcopy(release)
    nb.cells = [c for c in nb.cells if c.metadata.get(
        "nbgrader", {}).get("grade_id") != "test_one_hot"]
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == (
                "test_accuracy"):
            cell.source = "pass"
    fixed, notes = grade.restore_locked(nb, release)
    assert [c.source for c in fixed.cells] == [
        c.source if c.metadata.get("nbgrader", {}).get("grade_id")
        != "test_accuracy" else "pass" for c in release.cells]
    assert any("test_one_hot was missing" in n for n in notes), notes
    assert any("test_accuracy was edited" in n for n in notes), notes


FENCE = """
import os, sys
from dlcourse.guard import install
install(root=sys.argv[1], memory_gb=None, quiet=False)
def attempt(f):
    try:
        f()
        return "ok"
    except PermissionError:
        return "blocked"
print(attempt(lambda: open("mine.txt", "w").write("x")),
      attempt(lambda: open("mine.txt").read()),
      attempt(lambda: open("../../../source/a/nb.ipynb").read()),
      attempt(lambda: open("../../../gradebook.db", "a")),
      attempt(lambda: os.remove("../../../gradebook.db")),
      attempt(lambda: os.listdir("../../../submitted")),
      attempt(lambda: os.rename("mine.txt", "../../../x.txt")),
      attempt(lambda: os.system("true")),
      attempt(lambda: open(sys.argv[2], "w").write("x")))
"""


def test_the_fence_keeps_a_notebook_in_its_folder(tmp_path):
    root = tmp_path / "course"
    here = root / "autograded" / "s" / "a"
    here.mkdir(parents=True)
    (root / "source" / "a").mkdir(parents=True)
    (root / "source" / "a" / "nb.ipynb").write_text("secret")
    (root / "gradebook.db").write_text("grades")
    (root / "submitted").mkdir()
    outside = tmp_path / "elsewhere.txt"
    proc = subprocess.run([sys.executable, "-c", FENCE, str(root),
                           str(outside)], cwd=here, capture_output=True,
                          text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "ok", "ok", "blocked", "blocked", "blocked", "blocked", "blocked",
        "blocked", "ok"], proc.stdout
    assert (root / "gradebook.db").read_text() == "grades"


def test_feedback_hides_hidden_tests():
    from dlcourse.feedback import HideHiddenTests

    cell = nbformat.v4.new_code_cell(
        "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(2) == 4, 'hint'\n"
        "### END HIDDEN TESTS")
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": "t",
                                 "points": 1, "solution": False}
    cell.outputs = [nbformat.v4.new_output(
        "error", ename="AssertionError", evalue="hint",
        traceback=["---", "assert f(2) == 4, 'hint'", "AssertionError"])]
    mine = nbformat.v4.new_code_cell("# ### BEGIN HIDDEN TESTS (a joke)")
    nb = nbformat.v4.new_notebook(cells=[cell, mine])
    nb, _ = HideHiddenTests().preprocess(nb, {})
    assert "f(2)" not in nbformat.writes(nb)
    assert nb.cells[0].outputs[0].traceback == ["AssertionError: hint"]
    assert nb.cells[1].source == mine.source


# --- with a kernel ----------------------------------------------------------

def test_deleted_and_edited_cells_loop_and_warnings(course, tmp_path):
    """One notebook, several faults: each is named, the rest is scored."""
    release, answers = release_of(course), answers_of(course)
    nb = grade.fill(release, {
        **answers,
        "one_hot": (
            "import warnings\n"
            + answers["one_hot"].replace("def one_hot(", "def _one_hot(")
            + "\n\ndef one_hot(y, num_classes):\n"
            "    warnings.warn('not the student fault')\n"
            "    torch.tensor(torch.zeros(1))  # PyTorch warns: copy\n"
            "    return _one_hot(y, num_classes)\n"),
        "standardize": "while True:\n    pass",
    })
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get(
        "grade_id") != "test_one_hot"]
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == (
                "test_accuracy"):
            cell.source = "pass"
    path = student_file(tmp_path, nb)
    before = path.read_bytes()
    code, out = run("--course", course, "--timeout", 15, "--json", path)
    assert path.read_bytes() == before, "grading changed the student's file"
    [result] = [json.loads(line) for line in out.splitlines()]
    scores = {c["grade_id"]: (c["score"], c["max_score"])
              for c in result["cells"]}
    notes = "\n".join(result["notes"])
    # the warnings cost nothing; the restored tests ran
    for test in ("test_one_hot", "test_accuracy"):
        assert scores[test][0] == scores[test][1] > 0, (test, result)
    assert "test_one_hot was missing" in notes
    assert "test_accuracy was edited" in notes
    # the loop: named, and the tests it starved say why
    assert "standardize ran longer than the 15 s limit" in notes, notes
    lost = [c for c in result["cells"] if c["grade_id"].startswith(
        "test_standardize")]
    assert lost and all(c["score"] == 0 for c in lost)
    assert "timed out before it defined this name" in lost[0]["message"]
    assert code == 1


def test_a_dead_kernel_is_reported_in_words(course, tmp_path):
    nb = grade.fill(release_of(course), {
        **answers_of(course),
        "one_hot": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    })
    code, out = run("--course", course, student_file(tmp_path, nb))
    assert code == 1
    assert "NOT GRADED: the Python kernel died" in out, out
    assert "out of memory" in out and "Traceback" not in out


def test_only_the_release_runs_the_visible_tests(course, tmp_path):
    handed = tmp_path / "handed"  # a student's course: exercises/ only
    shutil.copytree(course / "exercises", handed / "exercises")
    release = release_of(course)
    path = student_file(tmp_path, grade.fill(release, answers_of(course)))
    code, out = run("--course", handed, "--json", path)
    [result] = [json.loads(line) for line in out.splitlines()]
    assert result["hidden"] is False and result["error"] == "", result
    assert "hidden tests run when your instructor grades" in "\n".join(
        result["notes"])
    visible = [c for c in result["cells"] if c["max_score"] > 0]
    assert visible and result["score"] == result["max_score"] > 0, result
    tests = {c.metadata["nbgrader"]["grade_id"]: c for c in release.cells
             if c.metadata.get("nbgrader", {}).get("grade")
             and not c.metadata["nbgrader"].get("solution")}
    trivial = {"", "pass", "assert True"}
    hidden_only = {t for t, c in tests.items() if all(
        ln.strip() in trivial or ln.strip().startswith("#")
        for ln in c.source.splitlines())}
    said = {c["grade_id"] for c in result["cells"]
            if "hidden tests only" in c["message"]}
    assert said == hidden_only, result
    assert result["max_score"] == sum(
        c.metadata["nbgrader"]["points"] for t, c in tests.items()
        if t not in hidden_only), result
    assert code == 0


def test_the_course_is_generated_once(course, tmp_path):
    path = student_file(tmp_path, release_of(course))
    cache = Path(os.environ["DLCOURSE_CACHE"]) / "courses"
    run("--course", course, path)
    first = sorted(p.name for p in cache.iterdir())
    stamp = [(p / "ready").stat().st_mtime_ns for p in cache.iterdir()]
    code, out = run("--course", course, path)
    assert "score: 0 /" in out and code == 1
    assert sorted(p.name for p in cache.iterdir()) == first
    assert [(p / "ready").stat().st_mtime_ns
            for p in cache.iterdir()] == stamp


def test_the_memory_limit_and_its_message():
    code = ("from dlcourse.guard import install\n"
            "install(memory_gb=0.5, quiet=False)\n"
            "try:\n"
            "    bytearray(2**30)\n"
            "    print('allocated')\n"
            "except MemoryError:\n"
            "    print('limited')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True)
    assert proc.stdout.strip() == "limited", proc.stdout + proc.stderr
    cell = nbformat.v4.new_code_cell("big = torch.empty(10**10)")
    cell.outputs = [nbformat.v4.new_output(
        "error", ename="RuntimeError", traceback=[],
        evalue="DefaultCPUAllocator: can't allocate memory: you tried to "
               "allocate 80000000000 bytes.")]
    assert "out of memory: a grading kernel may use" in (
        grade._failure_text(cell))


def test_an_error_in_an_answer_cell_is_named_where_the_tests_fail():
    """A SyntaxError in an answer cell makes its tests fail with NameError;
    the message must point at the answer cell, not leave the student with
    'one_hot is not defined'."""
    def cell(grade_id, solution, error=None):
        c = nbformat.v4.new_code_cell("")
        c.metadata["nbgrader"] = {"grade_id": grade_id,
                                  "solution": solution,
                                  "grade": not solution}
        if error:
            c.outputs = [nbformat.v4.new_output(
                "error", ename=error[0], evalue=error[1], traceback=[])]
        return c

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        cell("one_hot", True,
             ("SyntaxError", "expected ':' (3029417071.py, line 1)")),
        cell("test_one_hot", False,
             ("NameError", "name 'one_hot' is not defined")),
        cell("standardize", True),
        cell("test_standardize", False),
    ]
    messages, notes = grade._messages(nb, timeout=60)
    assert "because your answer cell one_hot raised SyntaxError" in (
        messages["test_one_hot"])
    assert messages["test_standardize"] == ""
    assert any("one_hot raised SyntaxError: expected ':' (line 1)" in n
               for n in notes), notes
    # an unanswered cell is not an error of the student's
    nb.cells[0].outputs[0].ename = "NotImplementedError"
    nb.cells[0].outputs[0].evalue = ""
    messages, notes = grade._messages(nb, timeout=60)
    assert notes == [] and "because" not in messages["test_one_hot"]
