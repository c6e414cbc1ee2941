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


def record_dtypes_and_layouts(module: torch.nn.Module
                              ) -> tuple[list, list]:
    """Hook `module`: each forward appends its output's dtype and whether
    its input is channels_last. Returns the two lists it fills."""
    dtypes, layouts = [], []

    def record(module, inputs, output):  # returns None: output unchanged
        dtypes.append(output.dtype)
        layouts.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last))

    module.register_forward_hook(record)
    return dtypes, layouts
