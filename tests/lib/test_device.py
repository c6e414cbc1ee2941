import random

import numpy as np
import pytest
import torch

from dlcourse import device as dev


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("DLCOURSE_DEVICE", raising=False)
    monkeypatch.delenv("DLCOURSE_THREADS", raising=False)


def _mock(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, expected", [
    (True, True, "cuda"), (True, False, "cuda"),
    (False, True, "mps"), (False, False, "cpu")])
def test_get_device_order(monkeypatch, no_env, cuda, mps, expected):
    _mock(monkeypatch, cuda, mps)
    assert dev.get_device() == torch.device(expected)


def test_env_beats_cuda(monkeypatch, no_env):
    _mock(monkeypatch, cuda=True, mps=True)
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    assert dev.get_device() == torch.device("cpu")
    monkeypatch.setenv("DLCOURSE_DEVICE", "cuda:1")
    assert dev.get_device() == torch.device("cuda", 1)


def _draws():
    return (random.random(), float(np.random.rand()),
            torch.rand(3).tolist(), torch.randn(2).tolist())


def test_seed_everything_repeats_every_generator():
    dev.seed_everything(123)
    first = _draws()
    dev.seed_everything(123)
    assert _draws() == first
    dev.seed_everything(124)
    other = _draws()
    assert all(a != b for a, b in zip(other, first))


def test_seed_everything_seeds_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "manual_seed_all", calls.append)
    dev.seed_everything(7)
    assert calls and set(calls) == {7}  # torch.manual_seed's own call


def test_set_threads(monkeypatch, no_env):
    try:
        assert dev.set_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("DLCOURSE_THREADS", "2")
        assert dev.set_threads() == 2 == torch.get_num_threads()
        assert dev.set_threads(1) == 1 == torch.get_num_threads()
        with pytest.raises(ValueError):
            dev.set_threads(0)
    finally:
        torch.set_num_threads(1)


def test_setup_seeds_pins_and_picks(monkeypatch, no_env):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    assert dev.setup(seed=3) == torch.device("cpu")
    a = torch.rand(4)
    dev.setup(seed=3)
    assert torch.equal(a, torch.rand(4))
    assert torch.get_num_threads() == 1


def test_setup_on_cuda_lets_cudnn_pick_algorithms(monkeypatch, no_env):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cuda")
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert dev.setup().type == "cuda"
    assert torch.backends.cudnn.benchmark
