"""Test set-up: single-threaded torch in this process and in every kernel.

`make test` exports the same variables, so the nbval kernels of book/ (which
this conftest does not reach) get them too. Two processes share two cores
(see dlcourse.grade.grade_parallel), and torch with two threads per process
collapses under that load.
"""
import os

import pytest

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DLCOURSE_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
# The same numerics on any x86-64 CPU (see the Makefile): set before torch
# is imported, in this process and in every kernel it starts.
PINNED_NUMERICS = {"ATEN_CPU_CAPABILITY": "avx2",
                   "MKL_CBWR": "COMPATIBLE",
                   "ONEDNN_MAX_CPU_ISA": "AVX2"}
for var, value in PINNED_NUMERICS.items():
    os.environ.setdefault(var, value)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book, built once per session: (CompletedProcess, html folder).

    tests/book/test_build.py checks the build; tests/browser reads it.
    """
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("book")
    jb = shutil.which("jupyter-book") or str(
        Path(sys.executable).parent / "jupyter-book")
    proc = subprocess.run(
        [jb, "build", str(repo), "--path-output", str(out), "--all",
         "-W", "-n", "--keep-going"],
        capture_output=True, text=True, cwd=repo)
    return proc, out / "_build" / "html"
