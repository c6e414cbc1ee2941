"""Score exercise notebooks with nbgrader's autograder, hidden tests too.

    python -m dlcourse.grade                      # every notebook of work/
    python -m dlcourse.grade work/00_getting_started/ex01_tensors.ipynb
    python -m dlcourse.grade work/01_neural_networks --json

Each notebook is copied into an nbgrader course built from its source in
``solutions/`` (so the hidden tests are restored exactly as an instructor's
``nbgrader autograde`` would restore them); the student's file is only read.
The course is generated once per source and kept in a cache folder
(``$DLCOURSE_CACHE``, else ``~/.cache/dlcourse``), so a second grading of the
same exercise starts at once. Without ``solutions/`` (a student handed only
``exercises/``) the release itself is the source: the visible tests run and
the report says that the hidden tests run when the instructor grades.

The tests in ``tests/graders`` use the same functions on the reference
solution, the blank release and every bug-zoo entry.
"""
from __future__ import annotations

import argparse
import copy
import sys

if __name__ == "__main__":  # see dlcourse.exercises._NBGRADER
    sys.modules.setdefault("rfc3987_syntax", None)

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from dlcourse.exercises import HEADER, REPO, md_to_notebook, nbgrader

STUDENT = "student"
TIMEOUT = 120  # seconds per cell, as in the repository's nbgrader_config.py
MEMORY_GB = 6  # per grading kernel; DLCOURSE_GRADE_MEMORY_GB overrides
_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
_CACHE_VERSION = "2"  # bump when the cached course layout changes
_CONFIG = """\
c = get_config()
c.CourseDirectory.root = {root!r}
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.IncludeHeaderFooter.header = {header!r}
c.Execute.timeout = {timeout}
from dlcourse.grade import configure
configure(c, {root!r}, {memory_gb!r})
"""


def kernel_arguments(root: Path | str | None = None,
                     memory_gb: float | None = None) -> list[str]:
    """The grading kernel's command-line arguments (``Execute``).

    The kernel runs :func:`dlcourse.guard.install` before the student's
    code: a memory limit, no warnings (nbgrader scores a test cell that
    writes to stderr as 0) and, with ``root``, a fence around that nbgrader
    course folder.
    """
    gb = memory_gb or float(
        os.environ.get("DLCOURSE_GRADE_MEMORY_GB", MEMORY_GB))
    where = f"root={str(Path(root).resolve())!r}, " if root else ""
    return ["--HistoryManager.hist_file=:memory:",
            "--IPKernelApp.exec_lines=from dlcourse.guard import install; "
            f"install({where}memory_gb={gb:g})"]


def configure(c, root: Path | str = ".", memory_gb: float | None = None
              ) -> None:
    """The autograder's safety settings, for an ``nbgrader_config.py``::

        from dlcourse.grade import configure
        configure(c)   # c = get_config(); root: the course folder

    Every kernel gets the limits of :mod:`dlcourse.guard` (memory, no
    warnings, a fence around ``root``); deleted test cells are put back;
    the feedback hides the hidden tests (:mod:`dlcourse.feedback`).
    """
    c.Execute.extra_arguments = kernel_arguments(root, memory_gb)
    c.OverwriteCells.add_missing_cells = True
    c.GenerateFeedback.preprocessors = [
        "nbgrader.preprocessors.GetGrades",
        "dlcourse.feedback.HideHiddenTests",
        "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor",
    ]


@dataclass
class CellResult:
    """The score of one test cell and, if it lost points, why."""

    grade_id: str
    score: float
    max_score: float
    message: str = ""


@dataclass
class Result:
    """The score of one notebook, cell by cell, and what to know about it."""

    score: float
    max_score: float
    cells: list[CellResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""  # set when the notebook could not be graded at all
    hidden: bool = True  # False: visible tests only (no solutions/)

    def report(self) -> str:
        """A few lines a student can act on."""
        if self.error:
            lines = [f"NOT GRADED: {self.error}"]
        else:
            lines = [f"score: {self.score:g} / {self.max_score:g}"
                     + ("" if self.hidden else " (visible tests only)")]
        for c in self.cells:
            mark = "ok  " if c.score == c.max_score else "FAIL"
            lines.append(
                f"  {mark} {c.grade_id} ({c.score:g}/{c.max_score:g})"
            )
            if c.message:
                lines.extend("       " + m for m in c.message.splitlines())
        lines.extend("  note: " + n for n in self.notes)
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


def cache_dir() -> Path:
    """Where generated courses are kept between gradings."""
    if os.environ.get("DLCOURSE_CACHE"):
        return Path(os.environ["DLCOURSE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dlcourse"


def _grade_id(cell: nbformat.NotebookNode) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _points(nb: nbformat.NotebookNode) -> float:
    return float(sum(
        cell.metadata["nbgrader"].get("points", 0) for cell in nb.cells
        if cell.metadata.get("nbgrader", {}).get("grade")
        and cell.cell_type == "code"))


class Course:
    """An nbgrader course holding one assignment's source.

    ``source`` is the exercise's MyST file in ``solutions/`` or, without
    one, a release notebook (its visible tests are then all there is). With
    ``cache=True`` the generated course is kept under :func:`cache_dir`,
    keyed by the source's content, and copied for each use.
    """

    def __init__(self, source_md: Path, timeout: int = TIMEOUT,
                 cache: bool = False, memory_gb: float | None = None
                 ) -> None:
        source_md = Path(source_md)
        self.assignment = source_md.parent.name
        self.notebook = source_md.stem
        self.timeout = timeout
        self.hidden = source_md.suffix == ".md"
        header_md = source_md.parent.parent / f"{HEADER}.md"
        self.memory_gb = memory_gb
        self.root = Path(tempfile.mkdtemp(prefix="dlcourse-grade-"))
        # The key is the sources' bytes: a cache hit needs no jupytext.
        key = hashlib.sha256(b"\0".join([
            _CACHE_VERSION.encode(), _nbgrader_version().encode(),
            str(source_md.resolve()).encode(), source_md.read_bytes(),
            header_md.read_bytes() if self.hidden else b"",
            str(timeout).encode(),
        ])).hexdigest()[:24]
        template = cache_dir() / "courses" / key
        if cache and (template / "ready").exists():
            shutil.copytree(template, self.root, dirs_exist_ok=True)
        else:
            self._generate(source_md, header_md)
            if cache:
                self._store(template)
        self._configure()
        self.release = nbformat.read(
            self.root / "release" / self.assignment / f"{self.notebook}.ipynb",
            as_version=4)

    def _configure(self) -> None:
        header = self.root / f"{HEADER}.ipynb"
        (self.root / "nbgrader_config.py").write_text(_CONFIG.format(
            root=str(self.root), header=str(header) if header.exists()
            else "", timeout=self.timeout, memory_gb=self.memory_gb))

    def _generate(self, source_md: Path, header_md: Path) -> None:
        if self.hidden:
            source = md_to_notebook(source_md)
            nbformat.write(md_to_notebook(header_md, HEADER),
                           self.root / f"{HEADER}.ipynb")
        else:
            source = nbformat.read(source_md, as_version=4)
        self._configure()
        src = self.root / "source" / self.assignment
        src.mkdir(parents=True)
        nbformat.write(source, src / f"{self.notebook}.ipynb")
        nbgrader(["generate_assignment", self.assignment, "--force"],
                 cwd=self.root)

    def _store(self, template: Path) -> None:
        """Keep this freshly generated course for the next grading."""
        tmp = Path(tempfile.mkdtemp(prefix="new-", dir=_mkdir(
            template.parent)))
        try:
            shutil.copytree(self.root, tmp, dirs_exist_ok=True)
            (tmp / "ready").touch()
            os.replace(tmp, template)
        except OSError:  # another process stored it first
            shutil.rmtree(tmp, ignore_errors=True)

    def grade(self, submissions: dict[str, nbformat.NotebookNode]
              ) -> dict[str, Result]:
        """Autograde each submission (keyed by a student id)."""
        for student, nb in submissions.items():
            dest = self.root / "submitted" / student / self.assignment
            dest.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, dest / f"{self.notebook}.ipynb")
        proc = nbgrader(["autograde", self.assignment, "--force"],
                        cwd=self.root, check=False)
        log = proc.stdout + proc.stderr
        return {s: self._result(s, log) for s in submissions}

    def _result(self, student: str, log: str) -> Result:
        path = (self.root / "autograded" / student / self.assignment
                / f"{self.notebook}.ipynb")
        rows = self._grades(student) if path.exists() else []
        if not rows:
            return Result(0, _points(self.release), error=_why_not(log),
                          hidden=self.hidden)
        graded = nbformat.read(path, as_version=4)
        messages, notes = _messages(graded, self.timeout)
        order = [_grade_id(c) for c in self.release.cells]
        cells = sorted(
            (CellResult(name, score, max_score, messages.get(name, ""))
             for name, score, max_score in rows),
            key=lambda c: order.index(c.grade_id)
            if c.grade_id in order else len(order))
        result = Result(sum(c.score for c in cells),
                        sum(c.max_score for c in cells), cells, notes,
                        hidden=self.hidden)
        if not self.hidden:
            _visible_only(result, self.release)
        return result

    def _grades(self, student: str) -> list[tuple[str, float, float]]:
        """(test cell, score, max score) from the gradebook, read with
        sqlite3: importing nbgrader's API costs a second of CPU."""
        import sqlite3

        query = """
            SELECT bc.name, g.auto_score, g.manual_score, g.extra_credit,
                   gc.max_score
            FROM grade g
            JOIN base_cell bc ON g.cell_id = bc.id
            JOIN grade_cells gc ON gc.id = bc.id
            JOIN submitted_notebook sn ON g.notebook_id = sn.id
            JOIN submitted_assignment sa ON sn.assignment_id = sa.id
            JOIN notebook nb ON sn.notebook_id = nb.id
            WHERE sa.student_id = ? AND nb.name = ? AND gc.cell_type = 'code'
        """
        con = sqlite3.connect(self.root / "gradebook.db")
        try:
            rows = con.execute(query, (student, self.notebook)).fetchall()
        finally:
            con.close()
        # nbgrader's Grade.score: the manual score if any, else the
        # automatic one, plus any extra credit
        return [(name, float((manual if manual is not None else auto or 0)
                             + (extra or 0)), float(max_score))
                for name, auto, manual, extra, max_score in rows]

    def close(self) -> None:
        """Delete this course's working copy (the cache stays)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _nbgrader_version() -> str:
    from importlib.metadata import version
    return version("nbgrader")


def _why_not(log: str) -> str:
    """Plain words for an nbgrader run that produced no graded notebook."""
    if "DeadKernelError" in log or "Kernel died" in log:
        gb = os.environ.get("DLCOURSE_GRADE_MEMORY_GB", MEMORY_GB)
        return ("the Python kernel died while running this notebook, most "
                "likely because it ran out of memory (each grading kernel "
                f"may use {gb} GB). Look for a loop that keeps tensors "
                "alive or a very large tensor, fix it, and grade again.")
    if "UnresponsiveKernelError" in log or "unresponsive" in log:
        return ("the kernel stopped responding (an infinite loop that "
                "could not be interrupted?). Fix the cell and grade again.")
    last = [ln for ln in log.splitlines() if "Error" in ln][-3:]
    return ("nbgrader could not grade this notebook: "
            + (" / ".join(ln.strip() for ln in last) or "no reason given"))


def _messages(graded: nbformat.NotebookNode, timeout: int
              ) -> tuple[dict[str, str], list[str]]:
    """Failure text per grade id, and notes on cells that timed out."""
    messages, notes, timed_out, broken = {}, [], None, None
    for i, cell in enumerate(graded.cells):
        if cell.cell_type != "code":
            continue
        name = _grade_id(cell) or f"cell {i + 1}"
        text = _failure_text(cell, timeout)
        is_answer = cell.metadata.get("nbgrader", {}).get("solution")
        if "timed out" in text:
            notes.append(f"{name} ran longer than the {timeout} s limit and "
                         "was stopped: look for a loop that never ends (or "
                         "make it faster); the cells after it ran without "
                         "it.")
            timed_out = timed_out or name
        elif is_answer and (error := next(
                (o for o in cell.get("outputs", [])
                 if o.output_type == "error"
                 and o.ename != "NotImplementedError"), None)):
            # a SyntaxError (or any error) in an answer cell: the tests
            # after it fail with NameError, which alone points nowhere
            where = re.sub(r"\(\d+\.py, (line \d+)\)", r"(\1)",
                           str(error.evalue))  # the kernel's temp file
            notes.append(f"your answer cell {name} raised {error.ename}: "
                         f"{where}; it defined nothing, so the tests "
                         "that use it failed too. Fix that cell first.")
            broken = broken or (name, error.ename)
        elif timed_out and "NameError" in text:
            text += (f"\n(probably because {timed_out} timed out before it "
                     "defined this name)")
        elif broken and "NameError" in text:
            text += (f"\n(because your answer cell {broken[0]} raised "
                     f"{broken[1]})")
        if _grade_id(cell):
            messages[name] = text
    return messages, notes


def _failure_text(cell: nbformat.NotebookNode, timeout: int = TIMEOUT
                  ) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "error" and out.ename == "NotImplementedError":
            parts.append("not answered yet: replace `raise "
                         "NotImplementedError()` with your code")
        elif out.output_type == "error" and out.ename in (
                "CellTimeoutError", "KeyboardInterrupt"):
            parts.append(f"timed out: stopped after {timeout} s")
        elif out.output_type == "error":
            parts.append(f"{out.ename}: {out.evalue}")
            if out.ename == "MemoryError" or "allocate memory" in str(
                    out.evalue):
                gb = os.environ.get("DLCOURSE_GRADE_MEMORY_GB", MEMORY_GB)
                parts.append(f"(out of memory: a grading kernel may use "
                             f"{gb} GB)")
        elif out.output_type == "stream" and out.name == "stderr":
            text = out.text.strip()
            if len(text) > 500:
                text = text[:500] + " ..."
            parts.append("wrote to stderr (scored 0): " + text)
    return "\n".join(parts)


def _visible_only(result: Result, release: nbformat.NotebookNode) -> None:
    """Release-only grading: hidden-test cells are not scored here."""
    # What is left of a cell of hidden tests in the release.
    trivial = {"", "pass", "assert True"}
    empty = {
        _grade_id(c) for c in release.cells
        if _grade_id(c) and all(
            ln.strip() in trivial or ln.strip().startswith("#")
            for ln in c.source.splitlines())
    }
    for c in result.cells:
        if c.grade_id in empty:
            result.score -= c.score
            result.max_score -= c.max_score
            c.score = c.max_score = 0
            c.message = "hidden tests only: run when your instructor grades"
    result.notes.append(
        "no solutions/ here, so only the visible tests ran; the hidden "
        "tests run when your instructor grades, and may find more")


def grade_parallel(
    source_md: Path,
    submissions: dict[str, nbformat.NotebookNode],
    workers: int = 2,
    **course: object,
) -> dict[str, Result]:
    """Grade many submissions in ``workers`` courses side by side.

    Each course runs one kernel at a time; with one torch thread per kernel
    two courses keep two cores busy without oversubscribing them.
    ``course`` goes to :class:`Course` (``timeout``, ``cache``, ...).
    """
    from concurrent.futures import ThreadPoolExecutor

    names = list(submissions)
    chunks = [names[i::workers] for i in range(workers) if names[i::workers]]

    def run(chunk: list[str]) -> dict[str, Result]:
        c = Course(source_md, **course)
        try:
            return c.grade({n: submissions[n] for n in chunk})
        finally:
            c.close()

    with ThreadPoolExecutor(len(chunks)) as pool:
        results = {}
        for part in pool.map(run, chunks):
            results.update(part)
    return results


# --- the student's command line --------------------------------------------

def base_name(notebook: Path) -> str:
    """``ex01_tensors`` for ``ex01_tensors.ipynb`` or an update copy of it
    (``ex01_tensors.update-1a2b3c4d.ipynb``)."""
    return notebook.name.split(".")[0]


def source_of(notebook: Path, solutions: Path | None = None) -> Path:
    """The MyST source in ``solutions/`` of an exercise notebook."""
    solutions = solutions or REPO / "solutions"
    return solutions / notebook.parent.name / f"{base_name(notebook)}.md"


def release_of(notebook: Path, exercises: Path | None = None) -> Path:
    """The course's release of an exercise notebook in ``exercises/``."""
    exercises = exercises or REPO / "exercises"
    return exercises / notebook.parent.name / f"{base_name(notebook)}.ipynb"


class NotGradable(Exception):
    """A file that cannot be graded; the message says why and what to do."""


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook or raise :class:`NotGradable` in plain words."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise NotGradable(f"{path}: cannot be read ({err}).") from None
    try:
        json.loads(text)
        return nbformat.reads(text, as_version=4)
    except Exception as err:  # JSON or notebook-format errors
        raise NotGradable(
            f"{path} is not a valid notebook: it is not complete JSON "
            f"({type(err).__name__}: {str(err).splitlines()[0][:120]}). "
            "It was probably cut short while being saved. Open the last "
            "good version (JupyterLab: File > Revert Notebook to "
            "Checkpoint) or start again from a fresh copy of the course's "
            "release; your answers are the cells under `# YOUR CODE "
            "HERE`.") from None


def restore_locked(student: nbformat.NotebookNode,
                   release: nbformat.NotebookNode
                   ) -> tuple[nbformat.NotebookNode, list[str]]:
    """Put back the course's cells a student deleted; say which and which
    test cells were edited (the autograder uses the course's version)."""
    nb = copy.deepcopy(student)
    notes = []
    have = {_grade_id(c): i for i, c in enumerate(nb.cells) if _grade_id(c)}
    previous = None
    for cell in release.cells:
        gid = _grade_id(cell)
        if not gid:
            continue
        meta = cell.metadata["nbgrader"]
        kind = ("answer cell" if meta.get("solution")
                else "test cell" if meta.get("grade") else "course cell")
        if gid not in have:
            at = have[previous] + 1 if previous in have else len(nb.cells)
            nb.cells.insert(at, copy.deepcopy(cell))
            have = {_grade_id(c): i for i, c in enumerate(nb.cells)
                    if _grade_id(c)}
            notes.append(f"{kind} {gid} was missing from your notebook: "
                         "restored from the course")
        elif not meta.get("solution") and (
                nb.cells[have[gid]].source.strip() != cell.source.strip()):
            notes.append(f"{kind} {gid} was edited in your notebook: "
                         "graded with the course's version")
        previous = gid
    return nb, notes


def find_course(notebook: Path, solutions: Path | None = None,
                exercises: Path | None = None) -> tuple[Path, Path | None]:
    """(source, release) of a notebook; the source is the release itself
    when no ``solutions/`` is available. Raise :class:`NotGradable`."""
    source, release = source_of(notebook, solutions), release_of(
        notebook, exercises)
    if source.exists():
        return source, release if release.exists() else None
    if release.exists():
        return release, release
    raise NotGradable(
        f"{notebook} is not one of the course's exercises: found neither "
        f"{source} nor {release}. Grade a notebook named like the course's "
        "(NN_chapter/exMM_name.ipynb, e.g. work/00_getting_started/"
        "ex01_tensors.ipynb), or pass --source.")


def grade_file(notebook: Path, source_md: Path | None = None,
               cache: bool = True, timeout: int = TIMEOUT,
               course: Path | None = None) -> Result:
    """Score one student notebook without modifying it.

    ``course`` is the folder holding ``solutions/`` and ``exercises/``
    (default: this repository).
    """
    nb = read_notebook(notebook)
    if source_md is None:
        course = Path(course or REPO)
        source_md, _ = find_course(notebook, course / "solutions",
                                   course / "exercises")
    graded = Course(source_md, cache=cache, timeout=timeout)
    try:
        ids = {_grade_id(c) for c in graded.release.cells} - {None}
        if not ids & {_grade_id(c) for c in nb.cells}:
            raise NotGradable(
                f"{notebook} holds none of the cells of exercise "
                f"{graded.assignment}/{graded.notebook}: it is not a copy "
                "of that exercise (a different notebook saved under its "
                "name?).")
        nb, notes = restore_locked(nb, graded.release)
        result = graded.grade({STUDENT: nb})[STUDENT]
        result.notes[:0] = notes
        return result
    finally:
        graded.close()


def notebooks_in(path: Path) -> list[Path]:
    """The exercise notebooks a path names: a file, a chapter, a workspace.

    Update copies (``*.update-*.ipynb``) are graded only when named.
    """
    if path.is_file():
        return [path]
    found = sorted(p for p in path.glob("*.ipynb") if "." not in p.stem)
    found += sorted(p for p in path.glob("*/*.ipynb")
                    if "." not in p.stem and not p.parent.name.startswith("."))
    return found


def _default_target() -> Path:
    from dlcourse.workspace import default_workspace
    work = default_workspace()
    return work if work.exists() else REPO / "exercises"


def main(argv: list[str] | None = None) -> int:
    """Command line: print the scores; exit 0 only with full marks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path,
                        help="notebooks or folders (default: your "
                        "workspace, work/)")
    parser.add_argument("--source", type=Path, default=None,
                        help="the exercise's .md in solutions/ (default: "
                        "found from the notebook's folder and name)")
    parser.add_argument("--course", type=Path, default=None,
                        help="the folder holding solutions/ and exercises/ "
                        "(default: this repository)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per notebook")
    parser.add_argument("--timeout", type=int, default=TIMEOUT,
                        help=f"seconds per cell (default {TIMEOUT})")
    parser.add_argument("--no-cache", action="store_true",
                        help="regenerate the course instead of reusing it")
    args = parser.parse_args(argv)
    paths = args.paths or [_default_target()]
    notebooks = [nb for p in paths for nb in notebooks_in(p)]
    missing = [p for p in paths if not p.exists()]
    if missing or not notebooks:
        where = ", ".join(map(str, missing or paths))
        parser.error(f"no notebooks at {where}")
    if args.source and not args.source.exists():
        parser.error(f"no source {args.source}")
    from dlcourse.progress import record
    ok = True
    for path in notebooks:
        start = time.perf_counter()
        try:
            result = grade_file(path, args.source, cache=not args.no_cache,
                                timeout=args.timeout, course=args.course)
        except NotGradable as err:
            result = Result(0, 0, error=str(err))
        seconds = time.perf_counter() - start
        if not result.error:
            record(path, result)
        ok = ok and not result.error and result.score == result.max_score
        if args.json:
            print(json.dumps({"notebook": str(path), **asdict(result),
                              "seconds": round(seconds, 1)}))
        else:
            print(f"{path}: {result.report()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
