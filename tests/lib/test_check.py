import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlcourse import check

REPO = Path(__file__).resolve().parents[2]


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(20, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    return X, y, W


def _loss(X, y, W):
    return torch.nn.functional.cross_entropy(X @ W, y)


def _autograd(X, y, W):
    W = W.clone().requires_grad_()
    return torch.autograd.grad(_loss(X, y, W), W)[0]


def test_grad_check_passes_a_correct_gradient():
    X, y, W = _problem()
    errors = check.grad_check(lambda: _loss(X, y, W), {"W": W},
                              {"W": _autograd(X, y, W)})
    assert errors["W"] < 1e-7
    assert isinstance(errors["W"], float)  # still a float for callers


def test_one_element_of_the_wrong_sign_is_caught_and_named():
    X, y, W = _problem()
    grad = _autograd(X, y, W)
    i, j = divmod(int(grad.abs().argmin()), grad.shape[1])
    wrong = grad.clone()
    wrong[i, j] = -wrong[i, j]  # the smallest element, sign flipped
    errors = check.grad_check(lambda: _loss(X, y, W), {"W": W},
                              {"W": wrong})
    assert errors["W"] > 1e-6, "a wrong sign on one element must fail"
    assert errors["W"].index == (i, j)
    report = check.grad_check_report(errors)
    assert "MISMATCH" in report and f"[{i}, {j}]" in report


def test_wrong_sign_on_a_small_element_fails_the_old_measure_passed():
    # f = sum(c * w**2) / 2 with one tiny curvature: gradient c * w
    c = torch.tensor([1.0, 1.0, 1e-8], dtype=torch.float64)
    w = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    grad = c * w
    wrong = grad.clone()
    wrong[2] = -wrong[2]  # 3e-8 of the wrong sign beside a gradient of 2
    old = float((wrong - grad).abs().max()
                / (wrong.abs() + grad.abs()).max())
    assert old < 1e-7  # the old whole-tensor measure passed this
    errors = check.grad_check(lambda: (c * w ** 2).sum() / 2, {"w": w},
                              {"w": wrong})
    assert errors["w"] > 1e-6 and errors["w"].index == (2,)
    assert errors["w"].analytic == pytest.approx(-3e-8)
    assert errors["w"].numerical == pytest.approx(3e-8, abs=3e-9)


def test_float32_is_refused_with_a_clear_message():
    X, y, W = _problem()
    W32, X32 = W.float(), X.float()
    with pytest.raises(TypeError, match="float64.*double"):
        check.grad_check(lambda: _loss(X32, y, W32), {"W": W32},
                         {"W": _autograd(X32, y, W32)})
    # float64 parameters but a float32 computation inside f: refused too
    with pytest.raises(TypeError, match="float64"):
        check.grad_check(lambda: _loss(X32, y, W.float()), {"W": W},
                         {"W": _autograd(X, y, W)})


def test_report_prints_a_bound_never_round_off_digits():
    X, y, W = _problem()
    errors = check.grad_check(lambda: _loss(X, y, W), {"W": W, "W2": W},
                              {"W": _autograd(X, y, W),
                               "W2": _autograd(X, y, W) / 2})
    report = check.grad_check_report(errors)
    lines = report.splitlines()
    assert lines[0] == "           W  rel. error < 1e-06  ok"
    assert lines[1].startswith("          W2  rel. error 0.33  MISMATCH")
    # nothing at round-off scale in the text (it differs between CPUs)
    assert not re.search(r"e-(0[7-9]|[1-9]\d)", report)
    # a plain float (the old return type) still reports
    assert check.grad_check_report({"b": 3e-10}) == \
        "           b  rel. error < 1e-06  ok"


def test_zero_gradients_and_round_off_pass():
    # a ReLU with dead units: analytic 0 and numerical 0 for those
    g = torch.Generator().manual_seed(1)
    x = torch.randn(30, dtype=torch.float64, generator=g)
    errors = check.grad_check(lambda: torch.relu(x).sum() * 1e3, {"x": x},
                              {"x": (x > 0).double() * 1e3})
    assert errors["x"] < 1e-7


# ---------------------------------------------------------- warnings
def test_importing_check_leaves_warnings_alone():
    code = ("import warnings, dlcourse.check\n"
            "warnings.warn('still visible')\n")
    env = dict(os.environ, PYTHONWARNINGS="")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, timeout=120)
    assert "still visible" in proc.stderr


def _config_kernel_arguments():
    """Execute.extra_arguments as nbgrader_config.py sets them."""
    from traitlets.config import Config
    c = Config()
    exec((REPO / "nbgrader_config.py").read_text(),
         {"get_config": lambda: c})
    return list(c.Execute.extra_arguments)


@pytest.mark.slow
def test_grading_kernels_of_the_repo_config_are_quiet():
    # nbgrader starts its kernels with Execute.extra_arguments: a torch
    # warning in a test cell must not reach stderr (scored 0), while
    # chapters (plain kernels) keep their warnings.
    from jupyter_client.manager import start_new_kernel
    code = ("import torch\n"
            "torch.nn.functional.softmax(torch.zeros(2, 2))\n"
            "import warnings; warnings.warn('plain warning')\n")

    def stderr_of(args):
        km, kc = start_new_kernel(kernel_name="python3",
                                  extra_arguments=args)
        try:
            out = []
            kc.execute_interactive(code, timeout=120, output_hook=out.append)
            return "".join(m["content"].get("text", "") for m in out
                           if m["msg_type"] == "stream"
                           and m["content"]["name"] == "stderr")
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    assert stderr_of(_config_kernel_arguments()) == ""
    assert "softmax" in stderr_of([])  # the same code warns elsewhere


@pytest.mark.slow
def test_a_test_cell_in_which_torch_warns_scores_full(tmp_path):
    # The instructor's path: `nbgrader autograde` with the repository's
    # nbgrader_config.py (only the course folders moved to tmp_path).
    import nbformat
    from nbgrader.api import Gradebook

    from dlcourse.exercises import nbgrader

    def cell(source, **meta):
        c = nbformat.v4.new_code_cell(source)
        c.metadata["nbgrader"] = {"schema_version": 3, "task": False,
                                  "locked": False, "solution": False,
                                  "grade": False, **meta}
        return c

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nb.cells = [
        cell("def answer():\n    ### BEGIN SOLUTION\n    return 1\n"
             "    ### END SOLUTION", solution=True, grade_id="answer"),
        cell("import torch\n"
             "torch.nn.functional.softmax(torch.zeros(2, 2))  # warns\n"
             "assert answer() == 1", grade=True, locked=True, points=1,
             grade_id="test_answer"),
    ]
    for folder in ("solutions/warn", "submitted/student/warn"):
        (tmp_path / folder).mkdir(parents=True)
        nbformat.write(nb, tmp_path / folder / "ex.ipynb")
    (tmp_path / "nbgrader_config.py").write_text(
        f"exec(open({str(REPO / 'nbgrader_config.py')!r}).read())\n"
        f"c.CourseDirectory.root = {str(tmp_path)!r}\n"
        "c.IncludeHeaderFooter.header = ''\n")
    nbgrader(["generate_assignment", "warn", "--force"], cwd=tmp_path)
    nbgrader(["autograde", "warn", "--force"], cwd=tmp_path)
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        sub = gb.find_submission_notebook("ex", "warn", "student")
        assert (sub.code_score, sub.max_code_score) == (1, 1)
