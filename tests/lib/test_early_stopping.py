"""EarlyStopping: stop on a stalled validation metric, restore the best."""
import pytest
import torch
from torch import nn

from dlcourse.callbacks import EarlyStopping
from dlcourse.train import FitState, evaluate, fit
from lib_helpers import mlp


def _feed(cb, values, key="val_loss", model=None):
    """Drive cb through epochs whose monitored value is each of values."""
    model = model or nn.Linear(2, 1)
    state = FitState(model, None, num_epochs=len(values), device="cpu")
    cb.on_fit_start(state)
    for value in values:
        if state.stop:
            break
        state.epoch += 1
        with torch.no_grad():
            model.weight.fill_(state.epoch)  # the weights name the epoch
        cb.on_epoch_end(state, {"epoch": state.epoch, key: value})
    cb.on_fit_end(state)
    return state


def test_stops_after_patience_epochs_without_improvement():
    cb = EarlyStopping(patience=2)
    state = _feed(cb, [1.0, 0.8, 0.9, 0.85, 0.7])
    assert state.stop and state.epoch == 4 and cb.stopped_epoch == 4
    assert cb.best == 0.8 and cb.best_epoch == 2


def test_an_improvement_resets_the_count():
    cb = EarlyStopping(patience=2)
    state = _feed(cb, [1.0, 1.1, 0.9, 1.0, 0.8, 0.95, 0.96])
    assert state.epoch == 7 and state.stop and cb.best_epoch == 5


def test_min_delta_ignores_tiny_improvements():
    cb = EarlyStopping(patience=2, min_delta=0.05)
    state = _feed(cb, [1.0, 0.98, 0.97, 0.5])
    assert state.stop and state.epoch == 3 and cb.best == 1.0


def test_mode_max_for_accuracy():
    cb = EarlyStopping(monitor="val_acc", mode="max", patience=1)
    state = _feed(cb, [0.5, 0.7, 0.6, 0.9], key="val_acc")
    assert state.epoch == 3 and cb.best == 0.7


def test_restores_the_best_weights_even_without_stopping():
    model = nn.Linear(2, 1)
    _feed(EarlyStopping(patience=10), [1.0, 0.5, 0.7], model=model)
    assert torch.all(model.weight == 2)  # epoch 2 had the lowest loss
    model = nn.Linear(2, 1)
    _feed(EarlyStopping(patience=10, restore_best=False), [1.0, 0.5, 0.7],
          model=model)
    assert torch.all(model.weight == 3)  # left as the last epoch made it


def test_nan_is_never_an_improvement():
    cb = EarlyStopping(patience=1)
    state = _feed(cb, [1.0, float("nan"), 0.5])
    assert state.stop and state.epoch == 2 and cb.best == 1.0


def test_missing_metric_says_to_pass_eval_data():
    with pytest.raises(KeyError, match="eval_data"):
        _feed(EarlyStopping(), [1.0], key="train_loss")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        EarlyStopping(mode="lowest")
    with pytest.raises(ValueError):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError):
        EarlyStopping(min_delta=-1.0)


def test_with_fit_on_an_overfitting_model(digits):
    # 40 training digits and a large lr: the validation loss turns up.
    X, y = digits.X_train[:40], digits.y_train[:40]
    model = mlp(width=64)
    cb = EarlyStopping(patience=3)
    history = fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                  num_epochs=200, batch_size=8, callbacks=[cb],
                  eval_data=(digits.X_val, digits.y_val), device="cpu",
                  generator=torch.Generator().manual_seed(0))
    assert cb.stopped_epoch is not None and len(history) < 200
    assert len(history) == cb.best_epoch + 3
    assert cb.best == min(history["val_loss"])
    restored = evaluate(model, (digits.X_val, digits.y_val),
                        nn.CrossEntropyLoss(), device="cpu")
    assert restored["loss"] == pytest.approx(
        cb.best, rel=1e-6)
    # the callback is reusable: a second fit starts from a clean slate
    fit(model, (X, y), loss_fn=nn.CrossEntropyLoss(),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.0),
        num_epochs=2, callbacks=[cb], device="cpu",
        eval_data=(digits.X_val, digits.y_val))
    assert cb.stopped_epoch is None and cb.best_epoch == 1
