"""The graders prove themselves, for every exercise in solutions/.

For each ``solutions/NN_slug/exMM_name.md``: the reference solution scores
full marks, the untouched release scores zero, and every bug-zoo entry loses
points in the cells it names (``fails``) with the hint it names, while the
cells listed under its optional ``passes`` keep their points. All submissions of one
exercise are graded in one nbgrader autograde run.
"""
from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import nbformat
import pytest
import yaml

from dlcourse.exercises import REPO, generate, md_to_notebook
from dlcourse.grade import fill, grade_parallel, solution_cells

SOLUTIONS = REPO / "solutions"
EXERCISES_DIR = REPO / "exercises"
SOURCES = sorted(SOLUTIONS.glob("*/ex*.md"))
IDS = [f"{p.parent.name}/{p.stem}" for p in SOURCES]


def zoo_of(md: Path) -> list[dict]:
    path = md.with_name(md.stem + ".bugzoo.yml")
    return yaml.safe_load(path.read_text()) if path.exists() else []


ZOO = [(md, e) for md in SOURCES for e in zoo_of(md)]
ZOO_IDS = [f"{md.parent.name}/{md.stem}::{e['name']}" for md, e in ZOO]


@pytest.fixture(scope="session")
def graded():
    """Grade (once, lazily) the reference, blank and zoo of an exercise."""
    cache: dict[Path, dict] = {}

    def get(md: Path) -> dict:
        if md not in cache:
            # The committed release: the very file a student receives
            # (test_exercises_equal_a_fresh_regeneration proves it fresh).
            release = nbformat.read(
                EXERCISES_DIR / md.parent.name / f"{md.stem}.ipynb",
                as_version=4)
            answers = solution_cells(md_to_notebook(md))
            subs = {"reference": fill(release, answers), "blank": release}
            for e in zoo_of(md):
                subs[e["name"]] = fill(
                    release, {**answers, e["cell"]: e["source"]})
            results = grade_parallel(md, subs)
            # A submission nbgrader could not grade at all (a kernel that
            # did not start in time on a busy machine) is graded once more,
            # alone; an answer that really breaks grading fails again.
            again = {k: subs[k] for k, r in results.items() if r.error}
            if again:
                results.update(grade_parallel(md, again, workers=1))
            cache[md] = results
        return cache[md]

    return get


@pytest.mark.parametrize("exercise", SOURCES, ids=IDS)
def test_reference_scores_full_marks(graded, exercise):
    result = graded(exercise)["reference"]
    assert result.max_score > 0, "no graded test cells"
    assert result.score == result.max_score, result.report()


@pytest.mark.parametrize("exercise", SOURCES, ids=IDS)
def test_blank_release_scores_zero(graded, exercise):
    result = graded(exercise)["blank"]
    assert result.score == 0, result.report()


@pytest.mark.parametrize("exercise,entry", ZOO, ids=ZOO_IDS)
def test_bug_zoo_entry_loses_points_with_its_hint(graded, exercise, entry):
    result = graded(exercise)[entry["name"]]
    assert result.score < result.max_score, (
        f"bug-zoo entry {entry['name']!r} scored full marks:\n"
        + result.report())
    assert not result.error, (
        f"bug-zoo entry {entry['name']!r} was not graded at all; every "
        "entry must be graded and lose points in its named cells:\n"
        + result.report())
    by_id = {c.grade_id: c for c in result.cells}
    for test_id in entry["fails"]:
        assert by_id[test_id].score < by_id[test_id].max_score, (
            f"{test_id} should lose points:\n" + result.report())
    failed_text = "\n".join(by_id[t].message for t in entry["fails"])
    for hint in entry["hints"]:
        assert hint in failed_text, (
            f"hint {hint!r} missing from the failure of {entry['fails']}:\n"
            + result.report())
    # One bug costs points once: cells listed under `passes` (a later
    # function graded on a reference of this one, or the visible tests of
    # a bug only the hidden tests catch) must keep their full points.
    for test_id in entry.get("passes", []):
        assert by_id[test_id].score == by_id[test_id].max_score, (
            f"{test_id} should keep its points:\n" + result.report())


@pytest.mark.parametrize("exercise", SOURCES, ids=IDS)
def test_bug_zoo_is_well_formed(exercise):
    entries = zoo_of(exercise)
    functions = list(solution_cells(md_to_notebook(exercise)))
    assert functions, "no solution cells"
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), "bug-zoo names must be unique"
    for e in entries:
        required = {"name", "cell", "fails", "hints", "source"}
        assert required <= set(e) <= required | {"passes"}, e
        assert e["cell"] in functions, f"{e['name']}: no cell {e['cell']!r}"
        assert e["fails"] and e["hints"], f"{e['name']}: fails/hints empty"
    for fn in functions:
        count = names and sum(e["cell"] == fn for e in entries)
        assert count >= 3, f"{fn}: {count} bug-zoo entries, need >= 3"


def test_exercises_equal_a_fresh_regeneration(tmp_path):
    shutil.copytree(SOLUTIONS, tmp_path / "solutions",
                    ignore=shutil.ignore_patterns("*.ipynb"))
    shutil.copy(REPO / "nbgrader_config.py", tmp_path)
    generate(root=tmp_path)
    fresh, committed = tmp_path / "exercises", EXERCISES_DIR
    fresh_files = sorted(p.relative_to(fresh) for p in fresh.rglob("*")
                         if p.is_file())
    committed_files = sorted(p.relative_to(committed)
                             for p in committed.rglob("*") if p.is_file())
    assert fresh_files == committed_files, (
        "exercises/ holds other files than a regeneration: run "
        "`make exercises`")
    stale = [str(p) for p in fresh_files
             if not filecmp.cmp(fresh / p, committed / p, shallow=False)]
    assert not stale, (
        f"exercises/ differs from its sources in solutions/: {stale}; "
        "never edit exercises/ by hand, run `make exercises`")
