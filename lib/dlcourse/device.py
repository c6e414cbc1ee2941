"""One place decides the device, one call seeds everything."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["get_device", "seed_everything", "set_threads", "setup"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def get_device() -> torch.device:
    """Return DLCOURSE_DEVICE if set, else CUDA, else MPS, else the CPU."""
    name = os.environ.get("DLCOURSE_DEVICE", "").strip()
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA and MPS device


def set_threads(n: int | None = None) -> int:
    """Pin torch's CPU threads to n (default: DLCOURSE_THREADS, else 1)."""
    if n is None:
        # 1 by default: float sums, hence printed digits, depend on it.
        n = int(os.environ.get("DLCOURSE_THREADS", "1"))
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def setup(seed: int = 0) -> torch.device:
    """Pin threads, seed everything and return the device: a chapter's top.

    Launched by torchrun, it also joins the process group (NCCL on CUDA,
    gloo on a CPU) and returns this rank's device, ``cuda:LOCAL_RANK``;
    every rank gets the same seed, so all start from the same weights and
    shuffle the data the same way (see `dlcourse.distributed`).
    """
    set_threads()
    seed_everything(seed)
    device = get_device()
    from . import distributed

    if distributed.launched():
        device = distributed.init(device)
    if device.type == "cuda":
        # let cuDNN time its algorithms once per shape: fixed-size batches
        # then run faster (GPU numbers are not bit-reproducible anyway)
        torch.backends.cudnn.benchmark = True
    return device
