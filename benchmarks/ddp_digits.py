"""The digits MLP or the digits DCGAN, data-parallel under torchrun.

The script is ordinary single-process code (`setup`, `fit`); torchrun
runs one copy per process, and `dlcourse` does the rest: each rank gets
its share of every batch (``--batch-size`` is per process), gradients
are averaged by DistributedDataParallel, only rank 0 prints.

    python benchmarks/ddp_digits.py mlp                     # one process
    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_digits.py mlp
    torchrun --standalone --nproc_per_node=2 benchmarks/ddp_digits.py dcgan
    torchrun --standalone --nproc_per_node=8 benchmarks/ddp_digits.py \\
        dcgan --sync-bn                                     # 8 GPUs

On CPUs the processes talk over gloo, on GPUs over NCCL, one GPU each
(``cuda:LOCAL_RANK``). Several machines: run the same command on every
node, HOST0 being one node's address (the ranks are assigned by the
rendezvous)::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST0:29500 --rdzv_id=digits \\
        benchmarks/ddp_digits.py dcgan

With 2 processes of batch 32 the run sees the batches of one process
with batch 64, in the same order (equal up to round-off;
tests/lib/test_distributed.py checks it). The DCGAN's BatchNorm
normalises each rank's share of a batch; ``--sync-bn`` (CUDA only)
normalises over the whole batch instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
try:  # an installed dlcourse (the repo's venv) first, else the checkout
    import dlcourse  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "benchmarks"))  # chapter 6's DCGAN recipe

from dlcourse import distributed  # noqa: E402
from dlcourse.callbacks import PrintProgress  # noqa: E402
from dlcourse.data import load_digits  # noqa: E402
from dlcourse.device import setup  # noqa: E402
from dlcourse.gan import GAN, digits_metrics, gan_step  # noqa: E402
from dlcourse.train import evaluate, fit  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", choices=("mlp", "dcgan"))
    p.add_argument("--epochs", type=int, default=None,
                   help="default: 20 (mlp), 30 (dcgan)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="per process (the global batch is N times it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sync-bn", action="store_true",
                   help="SyncBatchNorm across ranks (CUDA only)")
    return p.parse_args(argv)


def run_mlp(args, device: torch.device) -> None:
    split = load_digits()
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    fit(model, (split.X_train, split.y_train),
        loss_fn=nn.functional.cross_entropy, optimizer=opt,
        num_epochs=args.epochs or 20, batch_size=args.batch_size,
        eval_data=(split.X_val, split.y_val), device=device,
        callbacks=[PrintProgress(every=5)])
    if distributed.is_main():
        val = evaluate(model, (split.X_val, split.y_val),
                       nn.functional.cross_entropy)
        print(f"val_acc {val['acc']:.3f}")


def run_dcgan(args, device: torch.device) -> None:
    import gan_cifar10  # the chapter's generator and discriminator

    z_dim, width = 32, 32  # as in chapter 6
    G = gan_cifar10.dcgan_generator(z_dim, 1, 8, width, start=2)
    D = gan_cifar10.dcgan_discriminator(1, 8, width, start=2)
    G.apply(gan_cifar10.dcgan_init)
    D.apply(gan_cifar10.dcgan_init)
    gan = GAN(G, D, (z_dim, 1, 1))
    if args.sync_bn:  # statistics of the whole batch, over all ranks
        if device.type != "cuda":
            raise SystemExit("--sync-bn: SyncBatchNorm needs CUDA")
        gan = nn.SyncBatchNorm.convert_sync_batchnorm(gan)
    opts = (torch.optim.Adam(gan.discriminator.parameters(), 5e-4,
                             betas=(0.5, 0.999)),
            torch.optim.Adam(gan.generator.parameters(), 5e-4,
                             betas=(0.5, 0.999)))
    X = load_digits().images_train * 2 - 1  # tanh's range
    fit(gan, X, step=gan_step, optimizer=opts,
        num_epochs=args.epochs or 30, batch_size=args.batch_size,
        device=device, callbacks=[PrintProgress(every=5)])
    if distributed.is_main():
        fake = gan.sample(1000, torch.Generator().manual_seed(123))
        m = digits_metrics(fake, value_range=(-1, 1))
        print(f"confident {m['confident']:.1%}, class entropy "
              f"{m['class_entropy']:.2f} nats (max 2.30)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = setup(seed=args.seed)  # under torchrun: joins the group
    start = time.perf_counter(), time.process_time()
    if distributed.is_main():
        print(f"{distributed.world_size()} process(es) on {device.type}, "
              f"batch {args.batch_size} each", flush=True)
    (run_mlp if args.model == "mlp" else run_dcgan)(args, device)
    if distributed.is_main():
        print(f"rank 0: {time.perf_counter() - start[0]:.1f} s wall, "
              f"{time.process_time() - start[1]:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main()
