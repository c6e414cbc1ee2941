import os
import random
import stat

import numpy as np
import pytest
import torch
from torch import nn

from dlcourse import checkpoint
from dlcourse.callbacks import Callback
from dlcourse.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dlcourse.data import spirals
from dlcourse.train import fit
from lib_helpers import gpu, mlp


def _model_and_opt(seed=0):
    torch.manual_seed(seed)
    model = mlp(16, num_in=2, num_out=3, dropout=0.3)  # dropout uses RNG
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_roundtrip_restores_model_optimizer_and_rngs(tmp_path):
    model, opt = _model_and_opt()
    X, y = spirals(64, num_classes=3)
    fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
        num_epochs=1, device="cpu")
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=1,
                           extra={"note": "hi"})
    expected = (random.random(), np.random.rand(), torch.rand(3))

    other, other_opt = _model_and_opt(seed=1)
    assert load_checkpoint(path, other, other_opt) == 1
    assert (random.random(), np.random.rand()) == expected[:2]
    assert torch.equal(torch.rand(3), expected[2])
    for a, b in zip(_params(model), _params(other)):
        assert torch.equal(a, b)
    state, other_state = opt.state_dict(), other_opt.state_dict()
    for k in state["state"]:
        assert torch.equal(state["state"][k]["exp_avg"],
                           other_state["state"][k]["exp_avg"])
    assert checkpoint.load_extra(path) == {"note": "hi"}


def test_crash_mid_save_keeps_the_last_good_file(tmp_path, monkeypatch):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=3)
    real_save = torch.save

    def crash(obj, f):
        f.write(b"half a checkpoint")  # partial bytes, then the crash
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model, opt, epoch=4)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path, model, opt) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temp


def test_optimizer_count_must_match(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "ck.pt", model, (opt, opt), epoch=0)
    with pytest.raises(ValueError, match="2 optimizer"):
        load_checkpoint(path, model, opt)
    assert load_checkpoint(path, model, (opt, opt)) == 0


def _run(path, num_epochs, seed, generator=None, resume=True, lr=1e-2):
    model, opt = _model_and_opt(seed)
    for group in opt.param_groups:
        group["lr"] = lr
    X, y = spirals(200, num_classes=3,
                   generator=torch.Generator().manual_seed(0))
    hist = fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
               num_epochs=num_epochs, batch_size=32, eval_data=(X, y),
               callbacks=[Checkpoint(path, resume=resume)], device="cpu",
               generator=generator)
    return model, hist


def _without_time(hist):
    return [{k: v for k, v in e.items() if k != "seconds"}
            for e in hist.epochs]


@pytest.mark.parametrize("use_generator", [False, True])
def test_resume_is_bit_identical(tmp_path, use_generator):
    def gen():
        return torch.Generator().manual_seed(9) if use_generator else None

    full, full_hist = _run(tmp_path / "full.pt", 5, seed=0, generator=gen())
    _run(tmp_path / "cut.pt", 2, seed=0, generator=gen())  # "crashes"
    torch.manual_seed(1234)  # the new process's RNG differs
    random.seed(1234)
    resumed, resumed_hist = _run(tmp_path / "cut.pt", 5, seed=7,
                                 generator=gen())
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)
    assert _without_time(full_hist) == _without_time(resumed_hist)
    assert len(resumed_hist) == 5


def test_resume_changes_something_if_rng_is_not_restored(tmp_path,
                                                         monkeypatch):
    # guards the test above: without RNG restore the runs must differ
    monkeypatch.setattr(checkpoint, "_set_rng_state", lambda state: None)
    full, _ = _run(tmp_path / "full.pt", 4, seed=0)
    _run(tmp_path / "cut.pt", 2, seed=0)
    torch.manual_seed(1234)
    resumed, _ = _run(tmp_path / "cut.pt", 4, seed=7)
    assert not all(torch.equal(a, b)
                   for a, b in zip(_params(full), _params(resumed)))


def test_checkpoint_every_n_and_the_last(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(checkpoint, "save_checkpoint",
                        lambda path, model, opt, epoch, extra, scheduler:
                        saved.append(epoch))
    model, opt = _model_and_opt()
    fit(model, spirals(20), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
        num_epochs=5, callbacks=[Checkpoint(tmp_path / "c.pt", every=2)],
        device="cpu")
    assert saved == [2, 4, 5]


def test_finished_run_does_not_train_again(tmp_path, capsys):
    model, hist = _run(tmp_path / "ck.pt", 2, seed=0)
    before = _params(model)
    capsys.readouterr()
    again, hist2 = _run(tmp_path / "ck.pt", 2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(again)))
    assert len(hist2) == 2
    # loud: it says what it resumed
    assert capsys.readouterr().out == (
        f"resumed from {tmp_path / 'ck.pt'}: 2 epoch(s) done, 0 to go\n")


def test_resume_is_off_by_default(tmp_path):
    # re-running a cell (say with another seed or learning rate) trains
    # a new model from scratch; the old history is not returned
    path = tmp_path / "ck.pt"
    first, _ = _run(path, 2, seed=0, resume=False)
    again, hist = _run(path, 2, seed=3, resume=False)
    fresh, _ = _run(tmp_path / "other.pt", 2, seed=3, resume=False)
    assert all(torch.equal(a, b) for a, b in zip(_params(again),
                                                 _params(fresh)))
    assert not all(torch.equal(a, b) for a, b in zip(_params(first),
                                                     _params(again)))
    assert len(hist) == 2
    assert Checkpoint(path).resume is False


def test_resume_refuses_a_changed_learning_rate(tmp_path):
    path = tmp_path / "ck.pt"
    _run(path, 2, seed=0)
    with pytest.raises(ValueError, match=r"lr was 0\.01, now 0\.1.*resume"):
        _run(path, 4, seed=0, lr=0.1)
    _, hist = _run(path, 3, seed=0)  # the same settings: fine, one more
    assert len(hist) == 3


class _StepScheduler(Callback):
    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_epoch_end(self, state, logs):
        self.scheduler.step()


class _DrawNoise(Callback):
    """A callback that uses the global RNG after the checkpoint's turn."""

    def on_epoch_end(self, state, logs):
        torch.rand(5)


def _run_scheduled(path, num_epochs, seed):
    model, opt = _model_and_opt(seed)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    X, y = spirals(200, num_classes=3,
                   generator=torch.Generator().manual_seed(0))
    # the checkpoint comes first: the scheduler and the noise run after
    # its on_epoch_end, and must still be in what it saves
    fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
        num_epochs=num_epochs, batch_size=32, device="cpu",
        callbacks=[Checkpoint(path, resume=True, scheduler=sched,
                              verbose=False),
                   _StepScheduler(sched), _DrawNoise()])
    return model, opt, sched, torch.get_rng_state()


def test_resume_with_a_scheduler_and_later_callbacks_is_bit_identical(
        tmp_path):
    full, _, full_sched, full_rng = _run_scheduled(tmp_path / "a.pt", 4, 0)
    _run_scheduled(tmp_path / "b.pt", 2, 0)  # interrupted after 2 epochs
    torch.manual_seed(99)
    resumed, opt, sched, rng = _run_scheduled(tmp_path / "b.pt", 4, 5)
    assert sched.last_epoch == full_sched.last_epoch == 4
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 / 16)
    for a, b in zip(_params(full), _params(resumed)):
        assert torch.equal(a, b)
    assert torch.equal(rng, full_rng)  # the later callback's draws too


def test_checkpoint_has_the_usual_file_mode(tmp_path):
    model, opt = _model_and_opt()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=0)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX directory fsync")
def test_save_fsyncs_the_file_and_then_its_directory(tmp_path,
                                                     monkeypatch):
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    model, opt = _model_and_opt()
    save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=0)
    assert synced == [False, True]  # the data, then the rename


@gpu
def test_cuda_checkpoint_loads_on_cpu(tmp_path):
    model, opt = _model_and_opt()
    model.cuda()
    model(torch.randn(4, 2, device="cuda")).sum().backward()
    opt.step()
    path = save_checkpoint(tmp_path / "ck.pt", model, opt, epoch=1)
    cpu_model, cpu_opt = _model_and_opt(seed=1)
    assert load_checkpoint(path, cpu_model, cpu_opt) == 1
    for a, b in zip(_params(model), _params(cpu_model)):
        assert torch.equal(a.cpu(), b)
