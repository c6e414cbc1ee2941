import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import train
from dlcourse.callbacks import Callback
from dlcourse.data import TensorData, moons
from dlcourse.metrics import RunningMean
from lib_helpers import gpu, mlp


def _sgd(model, lr=0.1):
    return torch.optim.SGD(model.parameters(), lr=lr)


def test_overfits_one_batch():
    X, y = torch.randn(32, 64), torch.randint(0, 10, (32,))  # noise labels
    model = mlp(64)
    hist = train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(model.parameters(), 1e-2),
                     num_epochs=150, batch_size=32, device="cpu")
    assert hist.last["train_acc"] == 1.0
    assert hist.last["train_loss"] < 0.05
    assert hist["train_loss"][0] > 2.0  # it really started from chance


def test_learns_digits(digits):
    model = mlp(64)
    hist = train.fit(model, (digits.X_train, digits.y_train),
                     loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(model.parameters(), 3e-3),
                     num_epochs=4, eval_data=(digits.X_test, digits.y_test),
                     device="cpu")
    assert hist.keys() == ["epoch", "train_loss", "train_acc", "val_loss",
                           "val_acc", "seconds"]
    assert hist["epoch"] == [1, 2, 3, 4]
    assert hist.last["val_acc"] > 0.93
    assert len(hist) == 4 and "4 epochs" in repr(hist)


def test_logged_loss_is_the_mean_over_all_examples(digits):
    X, y = digits.X_train[:100], digits.y_train[:100]  # last batch: 36
    model = mlp()
    hist = train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model, lr=0.0), num_epochs=1,
                     device="cpu")
    with torch.no_grad():
        logits = model(X)
    assert hist.last["train_loss"] == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)
    assert hist.last["train_acc"] == pytest.approx(
        (logits.argmax(1) == y).float().mean().item())


def test_evaluate_against_torch(digits):
    model = mlp().train()
    got = train.evaluate(model, (digits.X_test, digits.y_test),
                         nn.CrossEntropyLoss(), batch_size=100,
                         device="cpu")
    with torch.no_grad():
        logits = model(digits.X_test)
    assert got["loss"] == pytest.approx(
        F.cross_entropy(logits, digits.y_test).item(), rel=1e-6)
    assert got["acc"] == pytest.approx(
        (logits.argmax(1) == digits.y_test).float().mean().item())
    assert model.training  # evaluate restores the mode it found


def test_evaluate_uses_eval_mode():
    model = mlp(dropout=0.9)
    X, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    a = train.evaluate(model, (X, y), nn.CrossEntropyLoss(), device="cpu")
    b = train.evaluate(model, (X, y), nn.CrossEntropyLoss(), device="cpu")
    assert a == b  # dropout off: deterministic


def _fit_weights(seed, **kwargs):
    torch.manual_seed(seed)
    X, y = moons(200, generator=torch.Generator().manual_seed(0))
    model = mlp(16, num_in=2, num_out=2, dropout=0.2)
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=3, batch_size=32,
              device="cpu", **kwargs)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_fit_is_deterministic():
    assert torch.equal(_fit_weights(0), _fit_weights(0))
    assert not torch.equal(_fit_weights(0), _fit_weights(1))


def test_cuda_options_do_not_change_cpu_numbers():
    ref = _fit_weights(0, amp=False, compile=False)
    assert torch.equal(ref, _fit_weights(0, amp=True, compile=True))


def test_generator_decides_the_batch_order():
    g = torch.Generator().manual_seed(5)
    a = _fit_weights(0, generator=g)
    b = _fit_weights(0, generator=torch.Generator().manual_seed(5))
    c = _fit_weights(0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_clipping_bounds_the_update():
    X, y = torch.randn(16, 64) * 100, torch.randint(0, 10, (16,))
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model, lr=1.0), num_epochs=1, batch_size=16,
              clip_grad=1e-3, device="cpu")
    step = torch.cat([(p.detach() - b).flatten()
                      for p, b in zip(model.parameters(), before)])
    assert step.norm() == pytest.approx(1e-3, rel=1e-3)  # norm clipped


class _NaNAt:
    """A loss that turns NaN at one (epoch, step), both from 1."""

    def __init__(self, epoch, step, steps_per_epoch):
        self.target = (epoch - 1) * steps_per_epoch + step
        self.calls = 0

    def __call__(self, logits, y):
        self.calls += 1
        loss = F.cross_entropy(logits, y)
        return loss * float("nan") if self.calls == self.target else loss


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_loss_raises_naming_epoch_and_step(bad):
    X, y = torch.randn(100, 64), torch.randint(0, 10, (100,))
    loss_fn = _NaNAt(epoch=2, step=3, steps_per_epoch=4)
    if bad == float("inf"):
        loss_fn.__class__ = type("_InfAt", (_NaNAt,), {
            "__call__": lambda s, a, b: _NaNAt.__call__(s, a, b)
            .nan_to_num(nan=float("inf"))})
    model = mlp()
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 3\b"):
        train.fit(model, (X, y), loss_fn=loss_fn, optimizer=_sgd(model),
                  num_epochs=5, batch_size=32, device="cpu")
    assert loss_fn.calls == loss_fn.target  # raised at once, not later


def test_epoch_end_check_names_the_first_bad_step():
    # the path used on accelerators, where a per-step check would sync
    meter = RunningMean()
    for value in [1.0, 2.0, float("nan"), float("inf")]:
        meter.update({"loss_d": torch.tensor(value)}, 8)
    with pytest.raises(train.NonFiniteLossError, match="loss_d.*step 3"):
        train._raise_first_nonfinite(meter, epoch=7)


def test_default_step_needs_a_loss():
    model = mlp()
    with pytest.raises(TypeError, match="loss_fn"):
        train.fit(model, torch.randn(4, 64), optimizer=_sgd(model),
                  num_epochs=1, device="cpu")


def test_custom_step_plugs_in():
    seen = []

    def step(model, batch, *, optimizer, **kwargs):
        (X,) = batch
        loss = model(X).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen.append(sorted(kwargs))
        return {"loss": loss.detach(), "norm": X.norm(dim=1).mean()}

    model = nn.Linear(3, 1)
    hist = train.fit(model, torch.randn(10, 3), optimizer=_sgd(model),
                     num_epochs=2, step=step, batch_size=5, device="cpu")
    assert hist.keys() == ["epoch", "train_loss", "train_norm", "seconds"]
    assert hist["train_loss"][1] < hist["train_loss"][0]
    assert seen[0] == ["autocast", "clip_grad", "loss_fn", "metrics"]


def test_metrics_default_and_override():
    X, yf = torch.randn(20, 2), torch.randn(20, 1)
    model = nn.Linear(2, 1)
    hist = train.fit(model, (X, yf), loss_fn=nn.MSELoss(),
                     optimizer=_sgd(model), num_epochs=1, device="cpu")
    assert "train_acc" not in hist.last  # float targets: no accuracy
    X, y = torch.randn(20, 2), torch.randint(0, 3, (20,))
    model = nn.Linear(2, 3)
    hist = train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model), num_epochs=1, device="cpu",
                     metrics={"top2": lambda lo, t: (lo.topk(2).indices
                                                     == t[:, None]).any(1)
                              .float().mean()})
    assert "train_top2" in hist.last and "train_acc" not in hist.last


def test_accepts_a_dataloader():
    ds = torch.utils.data.TensorDataset(torch.randn(40, 64),
                                        torch.randint(0, 10, (40,)))
    loader = torch.utils.data.DataLoader(ds, batch_size=8)
    model = mlp()
    hist = train.fit(model, loader, loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model), num_epochs=1, device="cpu",
                     metrics={})
    assert hist.keys() == ["epoch", "train_loss", "seconds"]


def test_callback_can_stop_training():
    class StopAfter2(Callback):
        def on_epoch_end(self, state, logs):
            state.stop = state.epoch >= 2

    model = mlp()
    hist = train.fit(model, (torch.randn(8, 64), torch.zeros(8).long()),
                     loss_fn=nn.CrossEntropyLoss(), optimizer=_sgd(model),
                     num_epochs=10, callbacks=[StopAfter2()], device="cpu")
    assert len(hist) == 2


def test_transform_applies_per_batch():
    images = torch.randint(0, 256, (12, 64), dtype=torch.uint8)
    data = TensorData(images, torch.randint(0, 10, (12,)),
                      transform=lambda X: X.float() / 255)
    model = mlp()
    hist = train.fit(model, data, loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model), num_epochs=1, device="cpu")
    assert len(hist) == 1


@gpu
def test_fit_on_cuda_is_resident_bf16_and_channels_last():
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    dtypes, formats = [], []
    conv[0].register_forward_hook(lambda m, i, o: (
        dtypes.append(o.dtype), formats.append(
            i[0].is_contiguous(memory_format=torch.channels_last))))
    X, y = torch.randn(256, 3, 8, 8), torch.randint(0, 10, (256,))
    hist = train.fit(conv, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(conv.parameters(), 1e-3),
                     num_epochs=2, eval_data=(X, y), device="cuda")
    assert next(conv.parameters()).is_cuda
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert set(dtypes) == {torch.bfloat16} and all(formats)
    assert hist.last["train_loss"] < hist["train_loss"][0]


@gpu
def test_fit_syncs_once_per_epoch_not_per_step():
    import warnings
    model = mlp().cuda()
    X = torch.randn(64 * 40, 64, device="cuda")
    y = torch.randint(0, 10, (64 * 40,), device="cuda")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                      optimizer=opt, num_epochs=2, device="cuda")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) < 40, f"{len(syncs)} syncs for 80 steps"
