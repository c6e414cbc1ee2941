"""nbgrader configuration: run the standard nbgrader commands from here.

    make exercises                                # solutions/*.md -> .ipynb
    nbgrader generate_assignment 00_getting_started --force
    nbgrader autograde 00_getting_started

The authored exercises are MyST files (solutions/NN_slug/exMM_name.md);
`make exercises` converts them to the .ipynb that nbgrader reads (git-ignored)
and then runs exactly the command above for every assignment.
"""
c = get_config()  # noqa: F821  (injected by traitlets)

c.CourseDirectory.root = "."
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"
# The MyST sources and bug zoos stay with the instructor.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback", ".*",
    "*.md", "*.bugzoo.yml",
]
c.IncludeHeaderFooter.header = "solutions/header.ipynb"
# Explicit per-cell limit: the default (30 s) is too short for the
# training exercises on a 2-core CPU.
c.Execute.timeout = 120
# The autograder's safety settings (dlcourse.grade.configure): grading
# kernels ignore warnings (nbgrader scores a test cell 0 if it writes to
# stderr, and a warning from PyTorch or NumPy during a correct answer is not
# the student's fault; chapters and scripts still warn), get a memory limit
# and a fence around the course folder; deleted test cells are restored;
# feedback hides the hidden tests. See book/instructors.md.
from dlcourse.grade import configure  # noqa: E402

configure(c)
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
