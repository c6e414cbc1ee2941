import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcourse import train
from dlcourse.callbacks import Callback
from dlcourse.data import TensorData, moons
from dlcourse.gan import GAN
from dlcourse.metrics import RunningMean
from lib_helpers import gpu, mlp, record_dtypes_and_layouts


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


def test_cuda_options_are_not_used_on_a_cpu(monkeypatch):
    # amp and compile must not even be tried on a CPU (the numbers would
    # then depend on them): make both fail if they are.
    ref = _fit_weights(0, amp=False, compile=False)

    def boom(*args, **kwargs):
        raise AssertionError("a CUDA-only option was used on the CPU")

    monkeypatch.setattr(torch, "autocast", boom)
    monkeypatch.setattr(nn.Module, "compile", boom)
    monkeypatch.setattr(torch, "compile", boom)
    assert torch.equal(ref, _fit_weights(0, amp=True, compile=True))


@pytest.mark.parametrize("capability, bf16", [((7, 5), False),
                                              ((7, 0), False),
                                              ((8, 0), True),
                                              ((9, 0), True)])
def test_bf16_autocast_only_where_it_is_fast(monkeypatch, capability,
                                             bf16):
    # T4 (7.5) and V100 (7.0) emulate bf16: float32 is faster there
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: capability)
    ctx = train._autocast(torch.device("cuda", 0), amp=True)
    if bf16:
        assert ctx.keywords == {"dtype": torch.bfloat16}
        assert ctx.args == ("cuda",)
    else:
        assert ctx is contextlib.nullcontext
    assert train._autocast(torch.device("cuda", 0), amp=False) \
        is contextlib.nullcontext


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


class _Snapshots(Callback):
    def __init__(self):
        self.params = []

    def on_batch_end(self, state, i, out):
        self.params.append([p.detach().clone()
                            for p in state.model.parameters()])


def test_nan_never_reaches_the_weights_on_a_cpu():
    X, y = torch.randn(100, 64), torch.randint(0, 10, (100,))
    loss_fn = _NaNAt(epoch=2, step=3, steps_per_epoch=4)
    model, snaps = mlp(), _Snapshots()
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 3\b.*before this step"):
        train.fit(model, (X, y), loss_fn=loss_fn, optimizer=_sgd(model),
                  num_epochs=5, batch_size=32, device="cpu",
                  callbacks=[snaps])
    # the model holds the weights after epoch 2's second step: re-running
    # the cell does not continue from NaN
    assert len(snaps.params) == 4 + 2
    for p, before in zip(model.parameters(), snaps.params[-1]):
        assert torch.equal(p.detach(), before)


def _custom_step(model, batch, *, loss_fn, optimizer, **kwargs):
    # a step that does not check before its update
    X, y = batch
    loss = loss_fn(model(X), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach()}


class _EpochStart(Callback):
    def on_epoch_start(self, state):
        self.params = [p.detach().clone() for p in state.model.parameters()]
        self.adam = {k: v["exp_avg"].clone() for k, v in
                     state.optimizer.state_dict()["state"].items()}


@pytest.mark.parametrize("per_step_check", [True, False])
def test_a_nan_step_is_undone_when_it_was_not_checked_before(
        monkeypatch, per_step_check):
    # A custom step updates before fit sees its loss; without a per-step
    # check (the accelerator path, forced here) the NaN is found only at
    # the end of the epoch. Either way fit puts back the weights and the
    # optimizer state of the epoch's start.
    if not per_step_check:
        monkeypatch.setattr(train, "RunningMean",
                            lambda on_host: RunningMean(on_host=False))
    X, y = torch.randn(100, 64), torch.randint(0, 10, (100,))
    loss_fn = _NaNAt(epoch=2, step=3, steps_per_epoch=4)
    model, start = mlp(), _EpochStart()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 3\b.*put back"):
        train.fit(model, (X, y), loss_fn=loss_fn, optimizer=opt,
                  step=_custom_step, num_epochs=5, batch_size=32,
                  device="cpu", callbacks=[start])
    assert loss_fn.calls == (loss_fn.target if per_step_check else 8)
    for p, before in zip(model.parameters(), start.params):
        assert torch.equal(p.detach(), before)
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(v["exp_avg"], start.adam[k])


def test_epoch_end_check_names_the_first_bad_step():
    # the path used on accelerators, where a per-step check would sync
    meter = RunningMean()
    for value in [1.0, 2.0, float("nan"), float("inf")]:
        meter.update({"loss_d": torch.tensor(value)}, 8)
    with pytest.raises(train.NonFiniteLossError, match="loss_d.*step 3"):
        train._raise_first_nonfinite(meter, epoch=7)


def test_epoch_end_check_names_the_earliest_step_of_any_loss():
    meter = RunningMean()
    nan = float("nan")
    for d, g in [(1.0, 1.0), (1.0, 1.0), (1.0, nan), (1.0, nan),
                 (nan, nan)]:
        meter.update({"loss_d": torch.tensor(d), "loss_g": torch.tensor(g)},
                     8)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"loss_g became nan at epoch 7, step 3\b"):
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


def test_a_dataloader_gets_the_default_accuracy():
    X, y = torch.randn(40, 64), torch.randint(0, 10, (40,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=8)
    model = mlp()
    hist = train.fit(model, loader, loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model, lr=0.0), num_epochs=1,
                     eval_data=loader, device="cpu")
    assert hist.keys() == ["epoch", "train_loss", "train_acc", "val_loss",
                           "val_acc", "seconds"]
    with torch.no_grad():
        acc = (model(X).argmax(1) == y).float().mean().item()
    assert hist.last["val_acc"] == pytest.approx(acc)
    assert train.evaluate(model, loader, None, device="cpu") == \
        pytest.approx({"acc": acc})


@pytest.mark.parametrize("option", [
    {"generator": torch.Generator()}, {"drop_last": True}])
def test_a_dataloader_refuses_options_it_would_ignore(option):
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.randn(8, 64),
                                       torch.randint(0, 10, (8,))))
    model = mlp()
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"{name}=.*DataLoader"):
        train.fit(model, loader, loss_fn=nn.CrossEntropyLoss(),
                  optimizer=_sgd(model), num_epochs=1, device="cpu",
                  **option)


def _bn_model():
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 10))


def test_batchnorm_with_a_last_batch_of_one_trains():
    # 65 = 64 + 1: BatchNorm cannot normalise a batch of one example
    X, y = torch.randn(65, 64), torch.randint(0, 10, (65,))
    model, snaps = _bn_model(), _Snapshots()
    hist = train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=_sgd(model), num_epochs=2, batch_size=64,
                     device="cpu", callbacks=[snaps])
    assert len(hist) == 2 and len(snaps.params) == 2  # one step an epoch
    # other sizes keep their last batch, as before
    model, snaps = _bn_model(), _Snapshots()
    X, y = torch.randn(66, 64), torch.randint(0, 10, (66,))
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=1, batch_size=64,
              device="cpu", callbacks=[snaps])
    assert len(snaps.params) == 2


@pytest.mark.parametrize("drop_last, steps", [(True, 3), (False, 4)])
def test_drop_last(drop_last, steps):
    X, y = torch.randn(100, 64), torch.randint(0, 10, (100,))
    model, snaps = mlp(), _Snapshots()
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=1, batch_size=32,
              device="cpu", callbacks=[snaps], drop_last=drop_last)
    assert len(snaps.params) == steps


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
    dtypes, formats = record_dtypes_and_layouts(conv[0])
    X, y = torch.randn(256, 3, 8, 8), torch.randint(0, 10, (256,))
    hist = train.fit(conv, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(conv.parameters(), 1e-3),
                     num_epochs=2, eval_data=(X, y), device="cuda")
    assert next(conv.parameters()).is_cuda
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    fast = torch.cuda.get_device_capability() >= (8, 0)
    assert set(dtypes) == {torch.bfloat16 if fast else torch.float32}
    assert all(formats)
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
    syncs = [str(w.message) for w in caught
             if "synchroniz" in str(w.message)]
    # one read-back of the epoch's losses per epoch (80 steps in all)
    assert len(syncs) <= 2, f"{len(syncs)} syncs in 2 epochs: {syncs}"


# ------------------------------------------------ devices (meta stands in)
def test_evaluate_runs_where_the_model_is(monkeypatch, digits):
    # DLCOURSE_DEVICE points elsewhere (a GPU, say): a CPU model must not
    # meet data moved there
    monkeypatch.setenv("DLCOURSE_DEVICE", "meta")
    model = mlp()
    got = train.evaluate(model, (digits.X_val, digits.y_val),
                         nn.CrossEntropyLoss())
    with torch.no_grad():
        logits = model(digits.X_val)
    assert got["loss"] == pytest.approx(
        F.cross_entropy(logits, digits.y_val).item(), rel=1e-6)
    assert next(model.parameters()).device.type == "cpu"


def test_evaluate_on_another_device_moves_the_model():
    model = mlp()
    X, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    # on the meta device nothing can be read back: reaching the read-back
    # (not "Tensor on device cpu is not on the expected device meta")
    # proves that model and data were both moved
    with pytest.raises(NotImplementedError, match="meta"):
        train.evaluate(model, (X, y), nn.CrossEntropyLoss(), device="meta")
    assert next(model.parameters()).device.type == "meta"


def test_fit_moves_model_and_data_together():
    model = mlp()
    X, y = torch.randn(16, 64), torch.randint(0, 10, (16,))
    with pytest.raises(NotImplementedError, match="meta"):
        train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                  optimizer=_sgd(model), num_epochs=1, eval_data=(X, y),
                  device="meta")
    assert next(model.parameters()).device.type == "meta"


def test_gan_sample_with_a_cpu_generator_on_another_device():
    g = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    model = GAN(g, nn.Linear(2, 1), 2).to("meta")
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    out = model.sample(5, generator=gen)
    assert out.shape == (5, 2) and out.device.type == "meta"
    # the noise was drawn by the CPU generator, then moved
    assert not torch.equal(gen.get_state(), state)


def test_channels_last_only_for_models_with_conv_weights():
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten())
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cuda = torch.device("cuda", 0)
    assert train._wants_channels_last(conv, cuda)
    assert not train._wants_channels_last(flat, cuda)
    assert not train._wants_channels_last(conv, torch.device("cpu"))
    X = torch.randn(8, 3, 4, 4)
    (nhwc,), = train._iterate(TensorData(X), torch.device("cpu"), 8, False,
                              None, nhwc=True)
    (plain,), = train._iterate(TensorData(X), torch.device("cpu"), 8,
                               False, None, nhwc=False)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert plain.is_contiguous() and not nhwc.is_contiguous()


def _record_pins(monkeypatch):
    pinned = []

    def pin(self, *args, **kwargs):
        pinned.append(tuple(self.shape))
        return self  # no CUDA here: pretend

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    return pinned


def test_data_too_big_for_the_gpu_pins_each_batch_not_the_set(
        monkeypatch):
    pinned = _record_pins(monkeypatch)
    monkeypatch.setattr(train, "_fits_on", lambda nbytes, device: False)
    data = TensorData(torch.randn(10, 3), torch.arange(10))
    assert train._place(data, torch.device("cuda", 0)) is data
    assert pinned == []  # the whole set is not page-locked
    batches = list(train._iterate(data, torch.device("meta"), 4, True,
                                  None, pin=True))
    assert pinned == [(4, 3), (4,), (4, 3), (4,), (2, 3), (2,)]
    assert all(t.device.type == "meta" for b in batches for t in b)


@gpu
def test_fit_on_cuda_pins_batches_of_data_that_does_not_fit(monkeypatch):
    monkeypatch.setattr(train, "_fits_on", lambda nbytes, device: False)
    seen = []
    real_pin = torch.Tensor.pin_memory

    def pin(self, *args, **kwargs):
        out = real_pin(self, *args, **kwargs)
        seen.append((tuple(self.shape), out.is_pinned()))
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    X, y = torch.randn(200, 64), torch.randint(0, 10, (200,))
    model = mlp()
    hist = train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                     num_epochs=2, eval_data=(X, y), device="cuda")
    assert next(model.parameters()).is_cuda
    assert not X.is_pinned()
    assert seen and all(ok for _, ok in seen)
    assert max(shape[0] for shape, _ in seen) <= 200
    assert (64, 64) in [shape for shape, _ in seen]  # training batches
    assert hist.last["train_loss"] < hist["train_loss"][0]


@gpu
def test_evaluate_and_fit_with_model_and_data_on_cuda(digits):
    model = mlp()  # built on the CPU
    data = (digits.X_val, digits.y_val)
    cpu = train.evaluate(model, data, nn.CrossEntropyLoss(), device="cpu")
    got = train.evaluate(model, data, nn.CrossEntropyLoss(), device="cuda",
                         amp=False)
    assert next(model.parameters()).is_cuda
    assert got["loss"] == pytest.approx(cpu["loss"], rel=1e-4)
    assert got["acc"] == pytest.approx(cpu["acc"], abs=1 / 287)
    # default device: where the model now is
    again = train.evaluate(model, data, nn.CrossEntropyLoss(), amp=False)
    assert again == pytest.approx(got, rel=1e-5)
    gpu_data = (digits.X_train.cuda(), digits.y_train.cuda())
    hist = train.fit(model, gpu_data, loss_fn=nn.CrossEntropyLoss(),
                     optimizer=torch.optim.Adam(model.parameters(), 3e-3),
                     num_epochs=3, eval_data=data, device="cuda")
    assert hist.last["val_acc"] > 0.8


@gpu
def test_a_model_without_conv_weights_gets_plain_batches_on_cuda():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    formats = []
    model.register_forward_pre_hook(lambda m, i: formats.append(
        i[0].is_contiguous()))
    X, y = torch.randn(128, 3, 8, 8), torch.randint(0, 10, (128,))
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=1, eval_data=(X, y),
              device="cuda")
    assert formats and all(formats)  # never converted to channels_last


@gpu
def test_bf16_only_on_ampere_or_later_for_real():
    model = mlp()
    dtypes = []
    model[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    X, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=1, device="cuda")
    fast = torch.cuda.get_device_capability() >= (8, 0)
    assert set(dtypes) == {torch.bfloat16 if fast else torch.float32}
    dtypes.clear()
    train.fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
              optimizer=_sgd(model), num_epochs=1, device="cuda", amp=False)
    assert set(dtypes) == {torch.float32}


@gpu
def test_nan_on_cuda_is_found_at_the_epoch_end_and_undone():
    X = torch.randn(100, 64, device="cuda")
    y = torch.randint(0, 10, (100,), device="cuda")
    loss_fn = _NaNAt(epoch=2, step=3, steps_per_epoch=4)
    model, start = mlp().cuda(), _EpochStart()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    with pytest.raises(train.NonFiniteLossError,
                       match=r"epoch 2, step 3\b.*put back"):
        train.fit(model, (X, y), loss_fn=loss_fn, optimizer=opt,
                  num_epochs=5, batch_size=32, device="cuda",
                  callbacks=[start])
    assert loss_fn.calls == 8  # no per-step sync: the epoch ran out
    for p, before in zip(model.parameters(), start.params):
        assert torch.equal(p.detach(), before)
    for k, v in opt.state_dict()["state"].items():
        assert torch.equal(v["exp_avg"], start.adam[k])
