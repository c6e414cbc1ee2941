"""Score an exercise notebook with nbgrader's autograder, hidden tests too.

    python -m dlcourse.grade exercises/00_getting_started/ex01_tensors.ipynb

The notebook is copied into a temporary nbgrader course built from its source
in ``solutions/`` (so the hidden tests are restored exactly as an instructor's
``nbgrader autograde`` would restore them); the student's file is only read.
The tests in ``tests/graders`` use the same functions on the reference
solution, the blank release and every bug-zoo entry.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from dlcourse.exercises import HEADER, REPO, md_to_notebook, nbgrader

STUDENT = "student"
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
_CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.IncludeHeaderFooter.header = {header!r}
c.Execute.timeout = {timeout}
"""


@dataclass
class CellResult:
    """The score of one test cell and, if it lost points, why."""

    grade_id: str
    score: float
    max_score: float
    message: str = ""


@dataclass
class Result:
    """The score of one notebook, cell by cell."""

    score: float
    max_score: float
    cells: list[CellResult] = field(default_factory=list)

    def report(self) -> str:
        """A few lines a student can act on."""
        lines = [f"score: {self.score:g} / {self.max_score:g}"]
        for c in self.cells:
            mark = "ok  " if c.score == c.max_score else "FAIL"
            lines.append(
                f"  {mark} {c.grade_id} ({c.score:g}/{c.max_score:g})"
            )
            if c.message:
                lines.extend("       " + m for m in c.message.splitlines())
        return "\n".join(lines)


def solution_cells(source: nbformat.NotebookNode) -> dict[str, str]:
    """Reference answers by grade id, with the solution markers removed."""
    out = {}
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            lines = [
                ln for ln in cell.source.splitlines()
                if ln.strip() not in _MARKERS
            ]
            out[meta["grade_id"]] = "\n".join(lines)
    return out


def fill(
    release: nbformat.NotebookNode, answers: dict[str, str]
) -> nbformat.NotebookNode:
    """A copy of ``release`` with the given solution cells filled in."""
    nb = copy.deepcopy(release)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nb


class Course:
    """A throw-away nbgrader course holding one assignment's source."""

    def __init__(self, source_md: Path, timeout: int = 120) -> None:
        self.assignment = source_md.parent.name
        self.notebook = source_md.stem
        self.root = Path(tempfile.mkdtemp(prefix="dlcourse-grade-"))
        header = self.root / f"{HEADER}.ipynb"
        nbformat.write(
            md_to_notebook(source_md.parent.parent / f"{HEADER}.md", HEADER),
            header,
        )
        (self.root / "nbgrader_config.py").write_text(_CONFIG.format(
            root=str(self.root), header=str(header), timeout=timeout))
        src = self.root / "source" / self.assignment
        src.mkdir(parents=True)
        self.source = md_to_notebook(source_md)
        nbformat.write(self.source, src / f"{self.notebook}.ipynb")
        nbgrader(["generate_assignment", self.assignment, "--force"],
                 cwd=self.root)
        self.release = nbformat.read(
            self.root / "release" / self.assignment / f"{self.notebook}.ipynb",
            as_version=4)

    def grade(self, submissions: dict[str, nbformat.NotebookNode]
              ) -> dict[str, Result]:
        """Autograde each submission (keyed by a student id)."""
        for student, nb in submissions.items():
            dest = self.root / "submitted" / student / self.assignment
            dest.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest / f"{self.notebook}.ipynb")
        nbgrader(["autograde", self.assignment, "--force"], cwd=self.root)
        return {s: self._result(s) for s in submissions}

    def _result(self, student: str) -> Result:
        from nbgrader.api import Gradebook

        graded = nbformat.read(
            self.root / "autograded" / student / self.assignment
            / f"{self.notebook}.ipynb", as_version=4)
        messages = {
            cell.metadata.get("nbgrader", {}).get("grade_id"):
                _failure_text(cell)
            for cell in graded.cells
        }
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            sub = gb.find_submission_notebook(
                self.notebook, self.assignment, student)
            cells = [
                CellResult(g.name, g.score, g.max_score,
                           messages.get(g.name, ""))
                for g in sub.grades if g.cell_type == "code"
            ]
            return Result(sub.code_score, sub.max_code_score, cells)

    def close(self) -> None:
        """Delete the temporary course."""
        shutil.rmtree(self.root, ignore_errors=True)


def grade_parallel(
    source_md: Path,
    submissions: dict[str, nbformat.NotebookNode],
    workers: int = 2,
) -> dict[str, Result]:
    """Grade many submissions in ``workers`` courses side by side.

    Each course runs one kernel at a time; with one torch thread per kernel
    two courses keep two cores busy without oversubscribing them.
    """
    from concurrent.futures import ThreadPoolExecutor

    names = list(submissions)
    chunks = [names[i::workers] for i in range(workers) if names[i::workers]]

    def run(chunk: list[str]) -> dict[str, Result]:
        course = Course(source_md)
        try:
            return course.grade({n: submissions[n] for n in chunk})
        finally:
            course.close()

    with ThreadPoolExecutor(len(chunks)) as pool:
        results = {}
        for part in pool.map(run, chunks):
            results.update(part)
    return results


def _failure_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "error" and out.ename == "NotImplementedError":
            parts.append("not answered yet: replace `raise "
                         "NotImplementedError()` with your code")
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
        elif out.output_type == "stream" and out.name == "stderr":
            parts.append("wrote to stderr (scored 0): " + out.text.strip())
    return "\n".join(parts)


def source_of(notebook: Path) -> Path:
    """The MyST source in ``solutions/`` of an exercise notebook."""
    return REPO / "solutions" / notebook.parent.name / f"{notebook.stem}.md"


def grade_file(notebook: Path, source_md: Path | None = None) -> Result:
    """Score one student notebook without modifying it."""
    course = Course(source_md or source_of(notebook))
    try:
        nb = nbformat.read(notebook, as_version=4)
        return course.grade({STUDENT: nb})[STUDENT]
    finally:
        course.close()


def main(argv: list[str] | None = None) -> int:
    """Command line: print the score; exit 0 only with full marks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--source", type=Path, default=None,
                        help="the exercise's .md in solutions/ (default: "
                        "found from the notebook's folder and name)")
    args = parser.parse_args(argv)
    source = args.source or source_of(args.notebook)
    if not source.exists():
        parser.error(f"no source {source}; pass --source")
    result = grade_file(args.notebook, source)
    print(f"{args.notebook}: {result.report()}")
    return 0 if result.score == result.max_score else 1


if __name__ == "__main__":
    sys.exit(main())
