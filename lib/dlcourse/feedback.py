"""Feedback that does not hand the hidden tests to the students.

``nbgrader autograde`` restores every test cell from the gradebook, hidden
tests included, and ``nbgrader generate_feedback`` renders that notebook
as it is: the students would read the hidden tests, and the tracebacks of
the failing ones, in their feedback. :class:`HideHiddenTests`, listed in
``GenerateFeedback.preprocessors`` by :func:`dlcourse.grade.configure`,
removes the hidden regions and shortens every traceback of a cell that had
one to its last line (the error and its hint).
"""
from __future__ import annotations

from nbgrader import utils
from nbgrader.preprocessors import ClearHiddenTests


class HideHiddenTests(ClearHiddenTests):
    """Feedback step: drop hidden tests and the tracebacks that quote them."""

    def preprocess_cell(self, cell, resources, cell_index):
        # Only the course's test cells: a student's own cell quoting the
        # markers must not stop their feedback.
        if not (utils.is_grade(cell)
                and self.begin_test_delimeter in cell.source):
            return cell, resources
        cell, resources = super().preprocess_cell(
            cell, resources, cell_index)
        if cell.cell_type == "code":
            cell.source += "\n# (hidden tests: not shown)"
            for out in cell.get("outputs", []):
                if out.output_type == "error":
                    out.traceback = [f"{out.ename}: {out.evalue}"]
        return cell, resources
