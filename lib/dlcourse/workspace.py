"""The student's workspace: their own copies of the exercises, never lost.

    make lab                          # sync, then JupyterLab in work/
    python -m dlcourse.workspace      # sync only: copy new exercises, report

``work/NN_slug/exMM_name.ipynb`` (git-ignored) is the student's copy of
``exercises/NN_slug/exMM_name.ipynb``. It is made the first time and never
written again: ``git pull``, ``make exercises`` and ``make test`` change
``exercises/`` only. ``work/.dlcourse/copies.json`` records which release
each copy was made from. When the course later fixes an exercise, the sync
says which notebooks are behind and writes the new release, with the
student's answers carried over, *beside* theirs as
``exMM_name.update-<hash>.ipynb``; the student checks it and renames it over
their notebook to take the fix.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dlcourse.exercises import REPO

STATE = ".dlcourse"


def default_workspace() -> Path:
    """``work/`` in the repository, or ``$DLCOURSE_WORK``."""
    return Path(os.environ.get("DLCOURSE_WORK") or REPO / "work")


def default_release() -> Path:
    """The course's release, ``exercises/`` in the repository."""
    return REPO / "exercises"


def digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def release_notebooks(release: Path) -> list[Path]:
    """Every exercise notebook of the release, by chapter."""
    return sorted(p for p in release.glob("*/*.ipynb")
                  if not p.parent.name.startswith("."))


def _course_cells(nb) -> dict[str, str]:
    """The cells the course owns (everything but the answers), by id."""
    out = {}
    for i, cell in enumerate(nb.cells):
        if cell.metadata.get("nbgrader", {}).get("solution"):
            continue
        out[cell.get("id") or f"#{i}"] = cell.source.strip()
    return out


def is_current(student, release) -> bool:
    """Whether a student's notebook holds every course cell of ``release``
    unchanged (their own extra cells and answers do not matter)."""
    mine = _course_cells(student)
    return all(mine.get(k) == v for k, v in _course_cells(release).items())


@dataclass
class Status:
    """One exercise of the workspace after a sync."""

    notebook: Path  # the student's copy
    state: str  # "new", "current", "behind" or "unreadable"
    update: Path | None = None  # the new release beside a behind copy

    def line(self, work: Path) -> str:
        rel = self.notebook.relative_to(work)
        if self.state == "new":
            return f"  new     {rel}"
        if self.state == "unreadable":
            return (f"  BROKEN  {rel}: not a readable notebook, so it was "
                    "left alone; `python -m dlcourse.grade` says more")
        if self.state == "behind":
            return (
                f"  BEHIND  {rel}: the course changed this exercise after "
                f"you copied it. Your notebook is unchanged. The new "
                f"version, with your answers copied in, is beside it: "
                f"{self.update.relative_to(work)}. Check it, then rename "
                f"it to {self.notebook.name} (replacing yours) to take "
                f"the fix.")
        return f"  ok      {rel}"


class Workspace:
    """A folder of personal copies of the release, laid out by chapter."""

    def __init__(self, root: Path | None = None,
                 release: Path | None = None) -> None:
        self.root = Path(root or default_workspace())
        self.release = Path(release or default_release())
        self.state_file = self.root / STATE / "copies.json"

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save(self, copies: dict) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(copies, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    def copy_of(self, release_nb: Path) -> Path:
        return self.root / release_nb.relative_to(self.release)

    def sync(self) -> list[Status]:
        """Copy new exercises; find (and offer updates to) behind ones."""
        import nbformat

        from dlcourse.grade import NotGradable, fill, read_notebook

        copies = self._load()
        out = []
        for rel_nb in release_notebooks(self.release):
            key = rel_nb.relative_to(self.release).as_posix()
            mine = self.copy_of(rel_nb)
            sha = digest(rel_nb)
            now = datetime.now(timezone.utc).isoformat(timespec="seconds")
            if not mine.exists():
                mine.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(rel_nb, mine)
                copies[key] = {"release": sha, "copied": now}
                out.append(Status(mine, "new"))
                continue
            if copies.get(key, {}).get("release") == sha:
                out.append(Status(mine, "current"))
                continue
            release = nbformat.read(rel_nb, as_version=4)
            try:
                student = read_notebook(mine)
            except NotGradable:
                out.append(Status(mine, "unreadable"))
                continue
            if is_current(student, release):  # they took the update
                copies[key] = {"release": sha, "copied": now}
                out.append(Status(mine, "current"))
                continue
            update = mine.with_name(
                f"{mine.name.split('.')[0]}.update-{sha[:8]}.ipynb")
            if not update.exists():
                answers = {
                    c.metadata["nbgrader"]["grade_id"]: c.source
                    for c in student.cells
                    if c.metadata.get("nbgrader", {}).get("solution")
                }
                nbformat.write(fill(release, answers), update)
            out.append(Status(mine, "behind", update))
        self._save(copies)
        return out

    def report(self, statuses: list[Status]) -> str:
        new = sum(s.state == "new" for s in statuses)
        behind = [s for s in statuses if s.state in ("behind", "unreadable")]
        lines = [f"{self.root}: your copies of the {len(statuses)} "
                 f"exercise notebooks ({new} new, {len(behind)} to look at)"]
        lines += [s.line(self.root) for s in statuses
                  if s.state != "current"]
        return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None,
                        help="the workspace (default: work/)")
    parser.add_argument("--release", type=Path, default=None,
                        help="the course's exercises (default: exercises/)")
    parser.add_argument("--lab", action="store_true",
                        help="then start JupyterLab in the workspace")
    args = parser.parse_args(argv)
    ws = Workspace(args.work, args.release)
    print(ws.report(ws.sync()))
    if args.lab:
        jupyter = Path(sys.executable).with_name("jupyter")
        argv = [str(jupyter), "lab", f"--ServerApp.root_dir={ws.root}"]
        if os.geteuid() == 0:  # a container's root user
            argv.append("--allow-root")
        sys.stdout.flush()
        # From the workspace: the instructor's nbgrader_config.py (and its
        # formgrader) stays out of the student's JupyterLab.
        os.chdir(ws.root)
        os.execv(jupyter, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
