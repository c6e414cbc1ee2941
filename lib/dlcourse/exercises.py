"""Build the student exercises from their one authored copy.

    python -m dlcourse.exercises            # what `make exercises` runs

1. every ``solutions/NN_slug/exMM_name.md`` (MyST, nbgrader cell metadata) is
   converted by jupytext to ``solutions/NN_slug/exMM_name.ipynb`` with fixed
   cell ids, so that regeneration is byte-stable;
2. nbgrader's own ``generate_assignment`` (configured by the repository's
   ``nbgrader_config.py``) writes ``exercises/NN_slug/exMM_name.ipynb``.

The grading helpers in :mod:`dlcourse.grade` use the same functions inside a
temporary course folder.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]
HEADER = "header"
_ID_OK = re.compile(r"[^A-Za-z0-9_-]")
# nbgrader's command line, minus an import that costs 3 s of CPU: jsonschema
# compiles an IRI grammar when rfc3987_syntax is installed, and nbformat's
# schema checks no IRI.
_NBGRADER = ("import sys; sys.modules['rfc3987_syntax'] = None; "
             "from nbgrader.apps.nbgraderapp import main; main()")


def md_to_notebook(path: Path, prefix: str = "cell") -> nbformat.NotebookNode:
    """Read a MyST exercise and give every cell a stable id."""
    import jupytext  # here, not above: seconds of imports `grade` can skip

    nb = jupytext.read(path)
    nb.metadata = {
        "kernelspec": {
            "display_name": "Python 3",
            "language": "python",
            "name": "python3",  # nbgrader requires this kernel name
        },
        "language_info": {"name": "python"},
    }
    seen: set[str] = set()
    for i, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell_id = (_ID_OK.sub("-", grade_id) if grade_id
                   else f"{prefix}-{i:02d}")
        if cell_id in seen:
            raise ValueError(f"{path}: duplicate cell id {cell_id!r}")
        seen.add(cell_id)
        cell.id = cell_id
    nb.nbformat, nb.nbformat_minor = 4, 5
    return nb


def assignments(solutions: Path) -> list[str]:
    """The assignment ids: the folders of ``solutions`` holding exercises."""
    return sorted(
        p.name for p in solutions.iterdir()
        if p.is_dir() and any(p.glob("ex*.md"))
    )


def write_sources(solutions: Path) -> list[Path]:
    """Convert every exercise (and the header) ``.md`` to ``.ipynb``."""
    written = []
    mds = [solutions / f"{HEADER}.md", *sorted(solutions.glob("*/ex*.md"))]
    for md in mds:
        out = md.with_suffix(".ipynb")
        # The header's ids must not collide with the exercise's own.
        prefix = HEADER if md.stem == HEADER else "cell"
        text = nbformat.writes(md_to_notebook(md, prefix)) + "\n"
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
        written.append(out)
    return written


def nbgrader(args: list[str], cwd: Path, check: bool = True
             ) -> subprocess.CompletedProcess:
    """Run an nbgrader command in ``cwd``; raise with its log on failure
    (unless ``check`` is false: autograde fails when one submission does)."""
    env = dict(os.environ)
    # nbgrader shells out to alembic, which lives beside this interpreter.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("DLCOURSE_THREADS", "1")
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # no debugger noise on stderr
    proc = subprocess.run(
        [sys.executable, "-c", _NBGRADER, *args],
        cwd=cwd, env=env, capture_output=True, text=True,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"nbgrader {' '.join(args)} failed in {cwd}:\n"
            f"{proc.stdout}\n{proc.stderr}"
        )
    return proc


def generate(root: Path = REPO, only: list[str] | None = None) -> None:
    """Regenerate ``exercises/`` from ``solutions/`` with nbgrader."""
    write_sources(root / "solutions")
    for assignment in only or assignments(root / "solutions"):
        nbgrader(["generate_assignment", assignment, "--force"], cwd=root)
        print(f"generated exercises/{assignment}/")


if __name__ == "__main__":
    generate(only=sys.argv[1:] or None)
