import io
import sys

import pytest
import torch
from torch import nn

from dlcourse import callbacks
from dlcourse.train import fit
from lib_helpers import mlp


class Recorder(callbacks.Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, state):
        self.calls.append("fit_start")

    def on_epoch_start(self, state):
        self.calls.append(f"epoch_start {state.epoch}")

    def on_batch_end(self, state, batch_index, outputs):
        assert outputs["loss"].dim() == 0  # still a tensor: no sync
        self.calls.append(f"batch {batch_index}")

    def on_epoch_end(self, state, logs):
        self.calls.append(f"epoch_end {state.epoch} {logs['epoch']}")

    def on_fit_end(self, state):
        self.calls.append("fit_end")


def _fit(cbs, num_epochs=2, n=10, **kw):
    model = mlp()
    return fit(model, (torch.randn(n, 64), torch.randint(0, 10, (n,))),
               loss_fn=nn.CrossEntropyLoss(),
               optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
               num_epochs=num_epochs, batch_size=4, callbacks=cbs,
               device="cpu", **kw)


def test_hook_order():
    rec = Recorder()
    _fit([rec])
    epoch = ["batch 0", "batch 1", "batch 2"]  # 10 rows, batches of 4
    assert rec.calls == (["fit_start", "epoch_start 0", *epoch,
                          "epoch_end 1 1", "epoch_start 1", *epoch,
                          "epoch_end 2 2", "fit_end"])


def test_callbacks_run_in_the_given_order():
    order = []

    class Named(callbacks.Callback):
        def __init__(self, name):
            self.name = name

        def on_epoch_end(self, state, logs):
            order.append(self.name)

    _fit([Named("a"), Named("b")], num_epochs=1)
    assert order == ["a", "b"]


def test_base_hooks_have_docstrings():
    for hook in ("on_fit_start", "on_epoch_start", "on_batch_end",
                 "on_epoch_end", "on_fit_end"):
        assert getattr(callbacks.Callback, hook).__doc__


def test_print_progress_one_line_per_epoch():
    out = io.StringIO()
    _fit([callbacks.PrintProgress(stream=out)], num_epochs=3,
         eval_data=(torch.randn(6, 64), torch.randint(0, 10, (6,))))
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1/3  train_loss ")
    for key in ("train_acc", "val_loss", "val_acc"):
        assert key in lines[-1]
    assert lines[-1].endswith(" s")
    assert max(map(len, lines)) <= 100


def test_print_progress_every_n_and_the_last():
    out = io.StringIO()
    _fit([callbacks.PrintProgress(every=2, stream=out)], num_epochs=5)
    epochs = [line.split()[1] for line in out.getvalue().splitlines()]
    assert epochs == ["2/5", "4/5", "5/5"]


def test_print_progress_defaults_to_stdout(capsys):
    _fit([callbacks.PrintProgress()], num_epochs=1)
    assert capsys.readouterr().out.startswith("epoch 1/1")


def test_not_in_jupyter_here():
    assert not callbacks.in_jupyter()


def test_live_plot_is_silent_outside_jupyter():
    plot = callbacks.LivePlot()
    _fit([plot])
    assert plot.fig is None


def test_live_plot_updates_one_display(monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    class Handle:
        updates = 0

        def update(self, fig):
            Handle.updates += 1

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda fig, display_id: shown.append(fig) or Handle())
    plot = callbacks.LivePlot(live=True)
    _fit([plot], num_epochs=3)
    assert len(shown) == 1  # one output, redrawn in place
    assert Handle.updates == 2 + 1  # epochs 2 and 3, then the final one
    assert not plt.fignum_exists(plot.fig.number)  # closed: shown once
    lines = plot.fig.axes[0].get_lines()
    assert len(lines[0].get_xdata()) == 3
