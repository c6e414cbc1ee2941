"""Test set-up: single-threaded torch in this process and in every kernel.

`make test` exports the same variables, so the nbval kernels of book/ (which
this conftest does not reach) get them too. Two processes share two cores
(see dlcourse.grade.grade_parallel), and torch with two threads per process
collapses under that load.
"""
import os

for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DLCOURSE_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
