"""Data parallelism under torchrun: 2 CPU processes, gloo over loopback.

Two torchrun launches (tests/lib/ddp_worker.py) train with per-rank batch
B/2; the same builders run here in one process with batch B, including
a last batch that splits unevenly (4 + 3, 7 + 6). Tolerances: the MLP's
parameters and logged losses within 1e-12 (float64; sums in another
order); accuracy (float32 by design) within 1e-6. The GAN casts its
logits to float32 (`dlcourse.gan._logits`), so its losses and their
gradients carry float32 rounding: parameters within 1e-8 after 3 epochs
of Adam, logged values within 1e-6. Every launch has a timeout, so a hang
fails the test instead of blocking CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import ddp_worker
from dlcourse import distributed
from dlcourse.data import TensorData, batches
from dlcourse.device import setup
from dlcourse.gan import GAN
from dlcourse.metrics import RunningMean
from dlcourse.train import _last_batch_breaks_batchnorm

WORKER = Path(ddp_worker.__file__)
TIMEOUT = 240  # s per launch; about 10 s on 2 idle cores


def _launch(out: Path, *scenarios: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               DLCOURSE_THREADS="1", GLOO_SOCKET_IFNAME="lo",
               DLCOURSE_DEVICE="cpu")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                 "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=2", str(WORKER), str(out), *scenarios]
    try:
        return subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"torchrun {' '.join(scenarios)} hung for {TIMEOUT} s:"
                    f"\n{e.stdout}\n{e.stderr}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Both launches; the second resumes the first's checkpoint."""
    if sys.platform != "linux":
        pytest.skip("the launches talk over Linux's loopback, lo")
    out = tmp_path_factory.mktemp("ddp")
    first = _launch(out, "mlp", "gan", "gan_full", "gan_first")
    assert first.returncode == 0, first.stdout + first.stderr
    second = _launch(out, "gan_resume", "nan")
    return {"out": out, "first": first, "second": second}


def _load(runs: dict, name: str) -> dict:
    return torch.load(runs["out"] / f"{name}.pt", weights_only=False)


def _max_gap(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _without_seconds(logs: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "seconds"} for e in logs]


@pytest.mark.parametrize("name, run, tol", [
    ("mlp", lambda: ddp_worker.mlp_run(16), 1e-12),
    ("gan", lambda: ddp_worker.gan_run(16), 1e-8),  # float32 losses
])
def test_two_processes_match_one(runs, name, run, tol) -> None:
    got = _load(runs, name)
    a, b = got["replicas"]
    assert torch.equal(a, b), "the two ranks hold different weights"
    model, logs = run()  # one process, batch 16 = 2 x 8, same order
    assert _max_gap(got["state"], model.state_dict()) < tol
    # the logged means: over both ranks, as one process logs them; in
    # float32 for accuracy and for the GAN (its logits are float32)
    mine, theirs = _without_seconds(logs), _without_seconds(got["logs"])
    assert [list(e) for e in mine] == [list(e) for e in theirs]
    for e1, e2 in zip(mine, theirs):
        for k in e1:
            tol = 1e-12 if name == "mlp" and "loss" in k else 1e-6
            assert abs(e1[k] - e2[k]) < tol, (k, e1[k], e2[k])


def test_only_rank_zero_prints(runs) -> None:
    lines = runs["first"].stdout.splitlines()
    assert sum(line.startswith("epoch 1/3") for line in lines) == 1


def test_resume_under_torchrun_is_bit_identical(runs) -> None:
    second = runs["second"]
    assert "resumed from" in second.stdout, second.stdout + second.stderr
    assert second.stdout.count("resumed from") == 1  # rank 0 only
    full, resumed = _load(runs, "gan_full"), _load(runs, "gan_resume")
    assert all(torch.equal(full["state"][k], resumed["state"][k])
               for k in full["state"])
    assert (_without_seconds(full["logs"])
            == _without_seconds(resumed["logs"]))


def test_a_rank_that_raises_ends_the_job(runs) -> None:
    # one rank meets the NaN, the other waits in DDP's all-reduce:
    # torchrun ends it, within the launch's timeout
    second = runs["second"]
    assert second.returncode != 0
    assert "NonFiniteLossError: loss became nan" in second.stderr


# ------------------------------------------- one process, no torchrun
def test_setup_without_torchrun_starts_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    setup(seed=0)
    assert not torch.distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.is_main()


@pytest.mark.parametrize("n, drop_last", [(100, False), (100, True),
                                          (97, False), (65, False)])
def test_shards_make_up_the_single_process_batches(n, drop_last) -> None:
    X = torch.arange(n)
    world, b = 3, 8
    gen = torch.Generator().manual_seed(1)
    single = [t for (t,) in batches(X, batch_size=world * b,
                                    generator=gen, drop_last=drop_last)]
    parts = []
    for r in range(world):
        gen.manual_seed(1)  # every rank draws the same permutation
        parts.append([t for (t,) in batches(
            X, batch_size=b, generator=gen, drop_last=drop_last,
            shard=(r, world))])
    for k, whole in enumerate(single):
        if len(whole) < world:  # too small to give every rank one
            assert all(len(p) == k for p in parts)
            continue
        joined = torch.cat([p[k] for p in parts])
        assert torch.equal(joined, whole)
        sizes = [len(p[k]) for p in parts]
        assert max(sizes) - min(sizes) <= 1


def test_gan_noise_is_this_ranks_rows_of_the_global_batch() -> None:
    gan = GAN(nn.Linear(3, 2), nn.Linear(2, 1), 3)
    view = gan.data_parallel(lambda m: m)  # no process group needed
    torch.manual_seed(5)
    whole = gan.sample_z(10)
    torch.manual_seed(5)
    distributed.set_batch(10, 6, 4)
    try:
        mine = view.sample_z(4)
    finally:
        distributed.set_batch(None)
    assert torch.equal(mine, whole[6:])


def test_batchnorm_last_share_of_one_is_dropped() -> None:
    bn = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    data = TensorData(torch.zeros(66, 2))
    # 66 = 2 x 32 + 2: one example for each of 2 ranks; 2 for one rank
    assert _last_batch_breaks_batchnorm(bn, data, 16, world=2)
    assert not _last_batch_breaks_batchnorm(bn, data, 32, world=1)


@pytest.mark.parametrize("on_host", [True, False])
def test_weighted_sums_give_the_means(on_host) -> None:
    meter = RunningMean(on_host=on_host)
    meter.update({"loss": torch.tensor(2.0)}, 3)
    meter.update({"loss": torch.tensor(5.0), "acc": torch.tensor(0.5)}, 1)
    sums = meter.weighted_sums()
    means = {k: float(s) / w for k, (s, w) in sums.items()}
    assert means == pytest.approx(meter.compute())
    assert sums["acc"][1] == 1 and sums["loss"][1] == 4


@pytest.mark.parametrize("model", ["mlp", "dcgan"])
def test_example_script_runs_in_one_process(model, capsys) -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks/ddp_digits.py"
    spec = importlib.util.spec_from_file_location("ddp_digits", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main([model, "--epochs", "1"])
    out = capsys.readouterr().out
    assert "1 process(es) on cpu, batch 32 each" in out
    assert ("val_acc" if model == "mlp" else "confident") in out
