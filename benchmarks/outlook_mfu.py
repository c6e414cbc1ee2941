"""Utilisation measured: achieved FLOP/s of a GPU against its peak.

Chapter 7 turns FLOPs into GPU-hours with a *utilisation* u, the fraction
of the accelerator's peak throughput a training run achieves. This script
measures u on the GPU at hand for two workloads, in bfloat16:

* ``matmul``: one large square matrix product (the best case);
* ``mlp_step``: one training step (forward, backward, SGD update) of a wide
  MLP, its FLOPs counted by ``torch.utils.flop_counter.FlopCounterMode``.

It writes ``benchmarks/results/outlook_mfu.csv``. Run from the repository
root on a CUDA machine::

    python benchmarks/outlook_mfu.py --peak-tflops 989

``--peak-tflops`` is the datasheet's dense bf16 peak of the GPU (989 for an
H100 or H200 SXM, 312 for an A100); without CUDA the script exits.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results" / "outlook_mfu.csv"


def seconds_per_call(fn, repeats: int = 50, warmup: int = 10) -> float:
    """Median seconds of fn() on the GPU, timed with CUDA events."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def count_flops(fn) -> int:
    """FLOPs of one call of fn, as FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def matmul_workload(n: int, device) -> tuple[str, object]:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    return f"matmul {n}x{n} @ {n}x{n}", lambda: a @ b


def mlp_step_workload(width: int, depth: int, batch_size: int,
                      device) -> tuple[str, object]:
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers).to(device, torch.bfloat16)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    X = torch.randn(batch_size, width, device=device, dtype=torch.bfloat16)

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(X).float().square().mean().backward()
        optimizer.step()

    name = f"mlp_step {depth}x{width}, batch {batch_size}"
    return name, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peak-tflops", type=float, required=True,
                        help="dense bf16 peak of the GPU, from its datasheet")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("outlook_mfu.py needs a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(0)
    gpu = torch.cuda.get_device_name(device)
    rows = []
    for name, fn in (matmul_workload(8192, device),
                     mlp_step_workload(8192, 8, 8192, device)):
        flops = count_flops(fn)
        seconds = seconds_per_call(fn)
        achieved = flops / seconds / 1e12
        rows.append({"gpu": gpu, "torch": torch.__version__,
                     "workload": name, "gflop_per_call": round(flops / 1e9),
                     "ms_per_call": round(seconds * 1e3, 3),
                     "achieved_tflops": round(achieved, 1),
                     "peak_tflops": args.peak_tflops,
                     "utilisation": round(achieved / args.peak_tflops, 3)})
        print(rows[-1], flush=True)
    RESULTS.parent.mkdir(exist_ok=True)
    with RESULTS.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
