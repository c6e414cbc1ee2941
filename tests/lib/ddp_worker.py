"""What tests/lib/test_distributed.py runs under torchrun (2 processes).

    torchrun --standalone --nproc_per_node=2 tests/lib/ddp_worker.py \\
        OUT_DIR SCENARIO...

Each scenario trains with `dlcourse.train.fit`, exactly as one process
would, and rank 0 saves what it got to OUT_DIR/<scenario>.pt. The test
runs the same builders (below) in one process to compare.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from dlcourse import distributed
from dlcourse.callbacks import Callback, PrintProgress
from dlcourse.checkpoint import Checkpoint
from dlcourse.device import seed_everything, setup
from dlcourse.gan import GAN, gan_step
from dlcourse.train import fit

# 199 % 16 = 7 and 189 % 16 = 13: last batches split 4 + 3 and 7 + 6
N_MLP, N_GAN = 199, 189
EPOCHS = 3


def mlp_run(batch_size: int, callbacks=()) -> tuple[nn.Module, list]:
    """A float64 MLP on fixed random data, SGD with momentum."""
    seed_everything(0)
    X = torch.randn(N_MLP, 10, dtype=torch.float64)
    y = (X[:, 0] + X[:, 1] ** 2 > 1).long() + (X[:, 2] > 0).long()
    model = nn.Sequential(nn.Linear(10, 16), nn.Tanh(),
                          nn.Linear(16, 3)).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    history = fit(model, (X, y), loss_fn=nn.functional.cross_entropy,
                  optimizer=opt, num_epochs=EPOCHS, batch_size=batch_size,
                  device="cpu", eval_data=(X[:50], y[:50]),
                  callbacks=callbacks)
    return model, history.epochs


def gan_model() -> GAN:
    """MLP G and D in float64 (no BatchNorm: see the README's note)."""
    G = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    D = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2),
                      nn.Linear(16, 1))
    return GAN(G, D, 2).double()


def gan_run(batch_size: int, num_epochs: int = EPOCHS, path=None,
            resume: bool = False, stop_after: int | None = None
            ) -> tuple[GAN, list]:
    """A GAN on a ring of points; optionally checkpointed.

    In float64: the default dtype too, for the noise z the step draws.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return _gan_run(batch_size, num_epochs, path, resume, stop_after)
    finally:
        torch.set_default_dtype(old)


def _gan_run(batch_size, num_epochs, path, resume, stop_after):
    seed_everything(0)
    angle = torch.rand(N_GAN, dtype=torch.float64) * 6.2832
    X = torch.stack([angle.cos(), angle.sin()], dim=1)
    model = gan_model()
    opts = (torch.optim.Adam(model.discriminator.parameters(), lr=2e-3,
                             betas=(0.5, 0.999)),
            torch.optim.Adam(model.generator.parameters(), lr=2e-3,
                             betas=(0.5, 0.999)))
    callbacks = [] if path is None else [Checkpoint(path, resume=resume)]
    if stop_after is not None:
        callbacks.append(_StopAfter(stop_after))
    history = fit(model, X, step=gan_step, optimizer=opts,
                  num_epochs=num_epochs, batch_size=batch_size,
                  device="cpu", callbacks=callbacks)
    return model, history.epochs


class _StopAfter(Callback):
    """Interrupt a run after some epochs (as a crash would)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, state, logs) -> None:
        if state.epoch >= self.epochs:
            state.stop = True


def _gathered(model: nn.Module) -> list[torch.Tensor]:
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    out = [torch.empty_like(flat) for _ in range(distributed.world_size())]
    torch.distributed.all_gather(out, flat)
    return out


def main(out: Path, scenarios: list[str]) -> None:
    setup(seed=0)
    assert distributed.is_distributed(), "run me with torchrun"
    for name in scenarios:
        if name == "mlp":
            model, logs = mlp_run(8, callbacks=[PrintProgress()])
        elif name == "gan":
            model, logs = gan_run(8)
        elif name == "gan_full":  # 4 epochs in one go
            model, logs = gan_run(8, 4)
        elif name == "gan_first":  # 2 of 4 epochs, then "crash"
            model, logs = gan_run(8, 4, out / "gan.ckpt", stop_after=2)
        elif name == "gan_resume":  # a new launch resumes the 2 left
            model, logs = gan_run(8, 4, out / "gan.ckpt", resume=True)
        elif name == "nan":
            seed_everything(0)
            X = torch.randn(64, 4)
            X[37, 1] = float("nan")  # one example, on one rank's share
            model = nn.Linear(4, 1)
            fit(model, (X, torch.randn(64, 1)),
                loss_fn=nn.functional.mse_loss, num_epochs=2,
                optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
                batch_size=8, device="cpu")
            continue
        else:
            raise SystemExit(f"unknown scenario {name}")
        result = {"state": {k: v.clone() for k, v in
                            model.state_dict().items()},
                  "replicas": _gathered(model), "logs": logs}
        if distributed.is_main():  # saved at once: a later one may raise
            torch.save(result, out / f"{name}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
