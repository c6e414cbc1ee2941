"""Shared test set-up: quiet, single-threaded kernels and xdist groups."""
import os

import pytest

# One torch thread per process: with `pytest -n 2` two kernels share the two
# cores, and two threads each collapse under load on a 2-core machine.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "DLCOURSE_THREADS"):
    os.environ.setdefault(var, "1")
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Keep each notebook's items on one xdist worker, in order.

    nbval runs a notebook's cells as consecutive items of one kernel, and the
    grader tests of one exercise share one autograde run.
    """
    for item in items:
        group = None
        if item.path.suffix == ".ipynb":
            group = str(item.path)
        elif "exercise" in getattr(getattr(item, "callspec", None),
                                   "params", {}):
            group = str(item.callspec.params["exercise"])
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(name=_safe(group)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
