"""Shared fixtures: one CPU thread, a headless matplotlib, seeded RNGs."""

import matplotlib

# Headless for this process only: an MPLBACKEND variable would leak into the
# nbval kernels that `make test` starts later and blank their figures.
matplotlib.use("Agg")

import pytest  # noqa: E402
import torch

from dlcourse.data import load_digits
from dlcourse.device import seed_everything


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.set_num_threads(1)  # float sums (and so results) depend on it
    seed_everything(0)


@pytest.fixture(scope="session")
def digits():
    """The digits split on the CPU (loaded once per session)."""
    return load_digits()
