import random

import numpy as np
import pytest
import torch
from torch import nn

from dlcourse import checkpoint
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


def _run(path, num_epochs, seed, generator=None):
    model, opt = _model_and_opt(seed)
    X, y = spirals(200, num_classes=3,
                   generator=torch.Generator().manual_seed(0))
    hist = fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
               num_epochs=num_epochs, batch_size=32, eval_data=(X, y),
               callbacks=[Checkpoint(path)], device="cpu",
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
                        lambda path, model, opt, epoch, extra: saved.append(
                            epoch))
    model, opt = _model_and_opt()
    fit(model, spirals(20), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
        num_epochs=5, callbacks=[Checkpoint(tmp_path / "c.pt", every=2)],
        device="cpu")
    assert saved == [2, 4, 5]


def test_finished_run_does_not_train_again(tmp_path):
    model, hist = _run(tmp_path / "ck.pt", 2, seed=0)
    before = _params(model)
    again, hist2 = _run(tmp_path / "ck.pt", 2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(before, _params(again)))
    assert len(hist2) == 2


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
