"""No stored chapter output may depend on floating-point round-off.

The last digits of a float64 sum depend on the CPU's vector instructions,
not only on the thread count: a cell that printed ``5.6e-17`` on one x86
machine printed ``8.3e-17`` on another and failed nbval there. A chapter
must print a bound or a verdict (``max |ours - torch| < 1e-12: True``) or a
value rounded far above round-off instead. This test rejects, in every
committed ``book/NN_slug.ipynb``, any number printed in scientific notation
(or with ten or more leading zeros) whose magnitude is below 1e-10: such a
number is round-off, or so close to it that it cannot be trusted to
reproduce. A number written as a bound (right after ``<``, ``>``,
``below``, ``above`` or ``than``) is a constant of the code, not a result,
and is allowed. A new chapter needs no change here.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

BOOK = Path(__file__).resolve().parents[2] / "book"
NOTEBOOKS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
LIMIT = 1e-10
# 1.2e-17, -3E-12, 4e-011 (mantissa optional digits after the point)
SCIENTIFIC = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d*)?[eE][-+]?\d+\b")
# 0.0000000000123: ten or more zeros after the decimal point
LEADING_ZEROS = re.compile(r"(?<![\w.])[-+]?0\.0{10,}[1-9]\d*")
# "< 1e-12", "below 1e-12", "less than 1e-12": a bound, not a result
BOUND = re.compile(r"(?:[<>]=?|[\u2264\u2265]|below|above|than)\s*$")


def round_off_numbers(text: str) -> list[str]:
    """The numbers in text that are nonzero and below LIMIT in magnitude."""
    found = []
    for pattern in (SCIENTIFIC, LEADING_ZEROS):
        for match in pattern.finditer(text):
            value = abs(float(match.group()))
            is_bound = BOUND.search(text[max(0, match.start() - 8):
                                         match.start()])
            if 0 < value < LIMIT and not is_bound:
                found.append(match.group())
    return found


def output_texts(cell: nbformat.NotebookNode) -> list[str]:
    """The plain text of every output of a code cell."""
    texts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            texts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            texts.append(out.data.get("text/plain", ""))
    return texts


def test_there_are_notebooks():
    assert NOTEBOOKS, "no book/NN_slug.ipynb found"


@pytest.mark.parametrize("text,bad", [
    ("b1: largest |autograd - ours| = 5.6e-17", ["5.6e-17"]),
    ("tensor([1.0000e+00, 2.2204e-16])", ["2.2204e-16"]),
    ("error 3E-12 and 0.000000000004", ["3E-12", "0.000000000004"]),
    ("max |ours - torch| < 1e-12: True", []),
    ("outputs differ by less than 1e-12: True, 4e-13 apart", ["4e-13"]),
    ("loss 2.3026, lr 1e-3, eps 1e-08, x=1e4, 0.0 and 0e+00", []),
    ("gap 1.5e-10 and ratio 3.1x at 0x7f3a2c", []),
])
def test_the_detector(text, bad):
    assert round_off_numbers(text) == bad


@pytest.mark.parametrize("ipynb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_no_output_depends_on_round_off(ipynb):
    nb = nbformat.read(ipynb, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    bad = []
    for number, cell in enumerate(code, start=1):
        for text in output_texts(cell):
            for value in round_off_numbers(text):
                bad.append(f"code cell {number}: {value}")
    assert not bad, (
        f"{ipynb.name} prints numbers below {LIMIT:g}, at round-off level, "
        f"which differ between CPUs: {bad}. Print a bound or a verdict "
        "instead (f\"max |ours - torch| < 1e-12: {gap < 1e-12}\"), see "
        "CONTRIBUTING.md")


# --- The numerics the stored outputs were computed with -------------------
# A training run amplifies round-off: on another CPU a chapter printed 228
# dead units where ours printed 217. The Makefile pins the instruction set
# torch, MKL and oneDNN use (AVX2; MKL's reproducible branch); the
# chapters' outputs are made and checked under that pin.
REPO = BOOK.parent


def _pinned_numerics() -> dict[str, str]:
    """tests/conftest.py's PINNED_NUMERICS, loaded by path: the name
    ``conftest`` may be another folder's conftest in a whole-suite run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_tests_root_conftest", REPO / "tests" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PINNED_NUMERICS


def test_the_pin_is_the_same_in_makefile_conftest_and_status_script():
    PINNED_NUMERICS = _pinned_numerics()
    makefile = (REPO / "Makefile").read_text()
    status = (BOOK / "_ext" / "measure_status.py").read_text()
    # the benchmarks whose seed 0 a chapter runs live
    scripts = [(REPO / "benchmarks" / f"{name}.py").read_text()
               for name in ("pretraining", "gan_ring")]
    for var, value in PINNED_NUMERICS.items():
        assert f"export {var} ?= {value}\n" in makefile, var
        for text in (status, *scripts):
            assert f'"{var}": "{value}"' in text, var


def test_torch_computes_with_the_pinned_instruction_set():
    import subprocess
    import sys

    PINNED_NUMERICS = _pinned_numerics()
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path(
        "/proc/cpuinfo").exists() else ""
    if " avx2" not in cpu_flags:
        pytest.skip("not an x86-64 CPU with AVX2: the pin does not apply")
    env = {**__import__("os").environ, **PINNED_NUMERICS}
    got = subprocess.run(
        [sys.executable, "-c", "import torch; "
         "print(torch.backends.cpu.get_cpu_capability())"],
        env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert got == "AVX2", got
