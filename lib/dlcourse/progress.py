"""Your progress: every chapter's exercises with your latest local score.

    python -m dlcourse.progress           # the workspace, work/
    python -m dlcourse.progress exercises

Read from local files only: ``python -m dlcourse.grade`` records each score
in ``.dlcourse/scores.json`` of the workspace (or, for a notebook outside
one, in the cache folder); nothing is graded or sent anywhere here.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from dlcourse.workspace import (STATE, default_release, default_workspace,
                                digest, release_notebooks)


def scores_file(notebook: Path) -> Path:
    """Where the score of ``notebook`` is kept."""
    for parent in Path(notebook).resolve().parents:
        if (parent / STATE).is_dir():
            return parent / STATE / "scores.json"
    from dlcourse.grade import cache_dir
    return cache_dir() / "scores.json"


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def record(notebook: Path, result) -> None:
    """Remember a grading of ``notebook`` (called by dlcourse.grade)."""
    path = scores_file(notebook)
    scores = _load(path)
    scores[str(Path(notebook).resolve())] = {
        "score": result.score, "max_score": result.max_score,
        "hidden": result.hidden, "sha256": digest(notebook),
        "graded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(scores, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def latest(notebook: Path) -> dict | None:
    """The last recorded grading of ``notebook``, or None."""
    entry = _load(scores_file(notebook)).get(str(Path(notebook).resolve()))
    if entry and Path(notebook).exists():
        entry["changed"] = digest(notebook) != entry["sha256"]
    return entry


def rows(folder: Path, release: Path) -> list[tuple[str, str, str]]:
    """(exercise, score, remark) for every exercise of the release."""
    out = []
    for rel_nb in release_notebooks(release):
        key = rel_nb.relative_to(release)
        mine = folder / key
        if not mine.exists():
            out.append((key.as_posix(), "-", "not started"))
            continue
        entry = latest(mine)
        if entry is None:
            out.append((key.as_posix(), "-", "not graded yet"))
            continue
        score = f"{entry['score']:g}/{entry['max_score']:g}"
        remark = entry["graded"].replace("T", " ")[:16] + " UTC"
        if not entry.get("hidden", True):
            remark += ", visible tests only"
        if entry.get("changed"):
            remark += ", edited since: grade again"
        out.append((key.as_posix(), score, remark))
    return out


def table(folder: Path, release: Path) -> str:
    """The progress table as text."""
    data = rows(folder, release)
    head = ("exercise", "score", "")
    w0 = max(len(r[0]) for r in [head, *data])
    w1 = max(len(r[1]) for r in [head, *data])
    lines = [f"{folder}:", f"  {head[0]:<{w0}}  {head[1]:>{w1}}"]
    chapter = None
    for name, score, remark in data:
        if name.split("/")[0] != chapter and chapter is not None:
            lines.append("")
        chapter = name.split("/")[0]
        lines.append(f"  {name:<{w0}}  {score:>{w1}}  {remark}".rstrip())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=None,
                        help="your notebooks (default: work/, else "
                        "exercises/)")
    parser.add_argument("--release", type=Path, default=None,
                        help="the course's exercises (default: exercises/)")
    args = parser.parse_args(argv)
    folder = args.folder or default_workspace()
    if not folder.exists():
        folder = default_release()
    print(table(folder, args.release or default_release()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
