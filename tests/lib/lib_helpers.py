"""Helpers shared by the tests of dlcourse (not fixtures)."""

import pytest
import torch


def gpu(test):
    """Mark a test `gpu` and skip it where CUDA is not available."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(),
                              reason="needs a CUDA device")
    return pytest.mark.gpu(skip(test))


def mlp(width: int = 32, num_in: int = 64, num_out: int = 10,
        dropout: float = 0.0) -> torch.nn.Module:
    """A small MLP used across the tests."""
    return torch.nn.Sequential(
        torch.nn.Linear(num_in, width), torch.nn.ReLU(),
        torch.nn.Dropout(dropout), torch.nn.Linear(width, num_out))
