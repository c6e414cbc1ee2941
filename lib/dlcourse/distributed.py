"""Data parallelism on PyTorch's own engine: torchrun + DDP.

The same notebook or script runs on a laptop, one GPU, eight GPUs or
several machines; only the launch changes::

    python train.py                                  # one process
    torchrun --standalone --nproc_per_node=8 train.py   # 8 GPUs (or CPUs)

Under torchrun (RANK, WORLD_SIZE and LOCAL_RANK are set),
`dlcourse.device.setup` calls `init`: it joins the process group (NCCL on
CUDA, gloo on a CPU) and picks ``cuda:LOCAL_RANK``. `dlcourse.train.fit`
then wraps the model in DistributedDataParallel, gives each rank its
share of every batch (``batch_size`` is per process, as in DDP), averages
the logged metrics over ranks once per epoch, and lets only rank 0 print
and write checkpoints. Without torchrun nothing here does anything.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["launched", "init", "is_distributed", "rank", "world_size",
           "local_rank", "is_main", "wrap", "unwrap", "shard",
           "set_batch", "batch_slice", "all_reduce_sums",
           "broadcast_buffers", "barrier", "rank_zero_only"]


def launched() -> bool:
    """True in a process started by torchrun (RANK and WORLD_SIZE set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    """This process's index on its machine (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group; return this rank's device.

    NCCL for CUDA (one GPU per process: ``cuda:LOCAL_RANK``), gloo for
    anything else. Called by `dlcourse.device.setup`; a second call
    returns the device without initialising again.
    """
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type != "cuda" and sys.platform.startswith("linux"):
            # one machine's CPUs: talk over loopback whatever the hostname
            # resolves to (set GLOO_SOCKET_IFNAME yourself across machines)
            if os.environ.get("LOCAL_WORLD_SIZE") == os.environ.get(
                    "WORLD_SIZE"):
                os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        if device.type == "cuda":
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
        atexit.register(_destroy)
    return device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True under torchrun (once `init` ran), even with one process.

    One process still trains in DDP: ``--nproc_per_node=1`` on one GPU
    runs the very code path of eight.
    """
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without torchrun)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 without torchrun)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0: the one process that prints and saves."""
    return rank() == 0


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """module in DistributedDataParallel (which copies rank 0's weights).

    Its gradients are averaged over examples, not over ranks: a rank
    whose share of an uneven last batch is smaller weighs less, so the
    result is the gradient of the mean loss over the whole batch.
    """
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device] if device.type == "cuda" else None
    ddp = DDP(module, device_ids=ids)
    ddp.register_comm_hook(None, _mean_over_examples)
    return ddp


def _mean_over_examples(state, bucket):  # noqa: ANN001 (DDP checks
    # the annotations, which `from __future__ import annotations` turns
    # into strings: none here)
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    if _batch is not None:
        total, _, n = _batch  # this rank holds n of the batch's total
        scale = n * dist.get_world_size() / total
        if scale != 1.0:  # shares differ: weigh each rank's mean by n
            bucket.buffer().mul_(scale)
    # sum over ranks, divided by the number of ranks (DDP's default)
    return default_hooks.allreduce_hook(None, bucket)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (module itself otherwise)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return module.module if isinstance(module, DDP) else module


def shard(total: int, rank: int, world: int) -> tuple[int, int]:
    """(start, stop) of rank's share of total items, sizes within one."""
    base, extra = divmod(total, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


# The global batch the current local batch belongs to: (size, offset of
# this rank's rows, their number). Set by the batch iterator, read by
# steps that draw per-example noise (the GAN step), so every rank draws
# the whole batch's noise, exactly as one process would, and keeps its
# own rows; and by the gradient averaging (uneven shares).
_batch: tuple[int, int, int] | None = None


def set_batch(size: int | None, offset: int = 0, n: int = 0) -> None:
    """Record the current global batch (None: not sharded)."""
    global _batch
    _batch = None if size is None else (size, offset, n)


def batch_slice(n: int) -> tuple[int, int]:
    """(global batch size, this rank's offset) for a local batch of n."""
    return _batch[:2] if _batch is not None else (n, 0)


def all_reduce_sums(sums: dict[str, tuple[torch.Tensor | float, float]],
                    device: torch.device) -> dict[str, float]:
    """Global means from per-rank (weighted sum, weight) pairs.

    One all-reduce of one float64 tensor, then one read-back.
    """
    names = list(sums)  # the same order on every rank: the step's
    flat = torch.stack([torch.as_tensor(x, dtype=torch.float64,
                                        device=device).reshape(())
                        for name in names for x in sums[name]])
    dist.all_reduce(flat)  # sum over ranks
    values = flat.tolist()
    return {name: values[2 * i] / values[2 * i + 1]
            for i, name in enumerate(names)}


def broadcast_buffers(module: nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics)."""
    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def barrier() -> None:
    """Wait for every rank (nothing without torchrun)."""
    if is_distributed():
        dist.barrier()


def rank_zero_only(fn: Callable) -> Callable:
    """Mark a callback class (or instance) to run on rank 0 only."""
    fn.rank_zero_only = True
    return fn
