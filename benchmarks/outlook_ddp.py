"""Data parallelism, checked: P processes with 1/P of the batch each reach
the same parameters as one process with the whole batch.

Chapter 7 runs it. Each process holds a full copy of a digits MLP, computes
the gradient of the mean loss on its own slice of every batch, and
PyTorch's DistributedDataParallel (DDP) averages the gradients across the
processes (an all-reduce) before the optimizer step. Averaging P slice-mean
gradients of equal-size slices is the mean gradient of the whole batch, so
after any number of SGD steps every replica must hold the parameters that
one process training on whole batches reaches. The script checks that in
float64 (tolerance 1e-12) for DDP and for the same averaging written by
hand (an all_reduce of every gradient), and shows the classic mistake: with
a *summed* loss the averaged gradient is 1/P of the whole batch's, and the
parameters drift away.

Run it (from the repository root):

    python benchmarks/outlook_ddp.py                   # spawns 2 CPU processes
    torchrun --standalone --nproc_per_node=2 benchmarks/outlook_ddp.py
    torchrun --standalone --nproc_per_node=8 benchmarks/outlook_ddp.py  # GPUs
    # two machines with 8 GPUs each; run on both, HOST = the first machine:
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_id=job1 \\
        --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        benchmarks/outlook_ddp.py

With a GPU for every process on the machine, each process drives one GPU
(backend NCCL); otherwise all of them run on the CPU (gloo).
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from dlcourse.data import load_digits  # noqa: E402

BATCH_SIZE = 96  # the global batch: divisible by 1, 2, 3, 4, 6, 8, 12, 16
NUM_STEPS = 10
LR = 0.1
TOL = 1e-12


def make_model(device: torch.device) -> nn.Module:
    """The same seeded 64-32-10 MLP in every process, in float64."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 10)).double().to(device)


def batches(device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """NUM_STEPS global batches of the digits training set, fixed order."""
    split = load_digits(device=device, dtype=torch.float64)
    X, y = split.X_train, split.y_train  # (1151, 64), (1151,)
    return [(X[i * BATCH_SIZE:(i + 1) * BATCH_SIZE],
             y[i * BATCH_SIZE:(i + 1) * BATCH_SIZE])
            for i in range(NUM_STEPS)]


def train(model: nn.Module, data, rank: int, world: int, reduction: str,
          average_by_hand: bool = False) -> None:
    """SGD on this process's slice (1/world) of every global batch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    per_rank = BATCH_SIZE // world
    for X, y in data:
        X_local = X[rank * per_rank:(rank + 1) * per_rank]  # (B/P, 64)
        y_local = y[rank * per_rank:(rank + 1) * per_rank]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X_local), y_local, reduction=reduction)
        loss.backward()  # a DDP model all-reduces the gradients in here
        if average_by_hand:  # what DDP does, written out
            for p in model.parameters():
                dist.all_reduce(p.grad)  # sum over the processes
                p.grad /= world
        optimizer.step()


def flat(model: nn.Module) -> torch.Tensor:
    """All parameters of a model as one vector."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


VARIANTS = {  # name: (wrap the model in DDP?, loss reduction)
    "DDP, mean loss": (True, "mean"),
    "all_reduce by hand, mean loss": (False, "mean"),
    "DDP, summed loss (a mistake)": (True, "sum"),
}


def worker(rank: int, world: int, local_rank: int, local_world: int
           ) -> None:
    """One process: train replicas, compare them with one-process training."""
    if BATCH_SIZE % world:
        raise SystemExit(f"{world} processes must divide the batch of "
                         f"{BATCH_SIZE}")
    torch.set_num_threads(1)
    cuda = torch.cuda.device_count() >= local_world  # one GPU per process
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank,
                            world_size=world)
    data = batches(device)
    lines = []
    for name, (use_ddp, reduction) in VARIANTS.items():
        replica = make_model(device)
        model = (DDP(replica, device_ids=[local_rank] if cuda else None)
                 if use_ddp else replica)
        train(model, data, rank, world, reduction,
              average_by_hand=not use_ddp)
        mine = flat(replica)
        # every replica must hold the same parameters: gather them all
        gathered = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(gathered, mine)
        if rank == 0:
            single = make_model(device)
            train(single, data, rank=0, world=1, reduction=reduction)
            gap = (mine - flat(single)).abs().max().item()
            spread = max((g - mine).abs().max().item() for g in gathered)
            lines.append(f"{name:>29s}: replicas agree {spread < TOL}, "
                         f"match one process {gap < TOL}")
    if rank == 0:
        print(f"{world} processes ({device.type}, {dist.get_backend()}), "
              f"{BATCH_SIZE // world} of {BATCH_SIZE} examples each, "
              f"{NUM_STEPS} SGD steps, float64, agree = max |difference| "
              f"< {TOL:g}")
        print("\n".join(lines), flush=True)
    dist.destroy_process_group()


def _spawned(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    # one machine: let gloo talk over loopback, whatever the hostname
    # resolves to
    os.environ.setdefault("GLOO_SOCKET_IFNAME",
                          "lo0" if sys.platform == "darwin" else "lo")
    worker(rank, world, local_rank=rank, local_world=world)


def free_port() -> int:
    """A TCP port on localhost that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nproc", type=int, default=2,
                        help="processes to spawn when not run by torchrun")
    args = parser.parse_args()
    if "RANK" in os.environ:  # launched by torchrun: one call per process
        worker(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
               int(os.environ["LOCAL_RANK"]),
               int(os.environ["LOCAL_WORLD_SIZE"]))
        return
    mp.spawn(_spawned, args=(args.nproc, free_port()), nprocs=args.nproc)


if __name__ == "__main__":
    main()
