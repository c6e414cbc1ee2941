import subprocess
import sys

import matplotlib.pyplot as plt
import pytest
import torch

from dlcourse import plot
from dlcourse.train import History


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _history():
    return History({"epoch": i, "train_loss": 1 / i, "val_loss": 1.2 / i,
                    "train_acc": 1 - 1 / (i + 1), "seconds": 0.1}
                   for i in range(1, 6))


def test_plot_history_losses_left_metrics_right():
    fig = plot.plot_history(_history())
    left, right = fig.axes
    assert [l.get_label() for l in left.get_lines()] == ["train_loss",
                                                         "val_loss"]
    assert [l.get_label() for l in right.get_lines()] == ["train_acc"]
    assert list(left.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    again = plot.plot_history(_history(), fig=fig)  # redraw in place
    assert again is fig and len(fig.axes) == 2


def test_plot_history_losses_only():
    hist = History([{"epoch": 1, "train_loss_d": 1.0, "train_loss_g": 2.0}])
    assert len(plot.plot_history(hist).axes) == 1


def test_show_images_batch_and_grid():
    ax = plot.show_images(torch.rand(10, 1, 8, 8), nrow=5, title="digits")
    image = ax.get_images()[0].get_array()
    assert image.shape == (2 * 9 + 1, 5 * 9 + 1)
    assert ax.get_title() == "digits"
    rgb = plot.show_images(torch.rand(4, 3, 8, 8) * 2 - 1, nrow=2)
    assert rgb.get_images()[0].get_array().shape == (19, 19, 3)


def test_decision_boundary_colours_by_prediction():
    X = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([0, 1])
    ax = plot.plot_decision_boundary(
        lambda P: torch.stack([-P[:, 0], P[:, 0]], 1), X, y, resolution=20)
    assert len(ax.collections) >= 2  # filled regions and the points
    one_logit = plot._predict(lambda P: P[:, :1], X)
    assert one_logit.tolist() == [0, 1]
    model = torch.nn.Linear(2, 3)
    assert plot._predict(model, X).shape == (2,)


def test_importing_the_library_does_not_import_matplotlib():
    code = ("import sys, dlcourse, dlcourse.train, dlcourse.gan, "
            "dlcourse.checkpoint, dlcourse.callbacks, dlcourse.data, "
            "dlcourse.config, dlcourse.device, dlcourse.metrics; "
            "assert 'matplotlib' not in sys.modules; "
            "assert 'sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
