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
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
