"""benchmarks/gan_ring.py: the ring-of-Gaussians mode-collapse benchmark.

Chapter 6 runs its seed 0 live and prints its committed CSV; these tests
prove the recipes (what D sees), the script end to end, and that the
committed table meets the targets the chapter claims (issue 12): the
vanilla recipe ends at <= 5/8 strict modes, the chapter's fix covers 8/8
within 60 s of training for at least 4 of 5 seeds.
"""
import csv
import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gan_ring.py"
CSV = REPO / "benchmarks" / "results" / "gan_ring.csv"
sys.path.insert(0, str(SCRIPT.parent))
import gan_ring  # noqa: E402

FIX = "pacgan2_mbstd"  # the recipe chapter 6 runs live


@pytest.mark.parametrize("recipe", gan_ring.RECIPES)
def test_every_recipe_builds_and_judges_its_batch(recipe):
    torch.manual_seed(0)
    model = gan_ring.ring_gan(recipe)
    fake = model.generator(model.sample_z(8))
    assert fake.shape == (8, 2)
    logits = model.discriminator(fake)
    packs = 2 if recipe.startswith("pacgan2") else 1
    assert logits.shape == (8 // packs, 1)


def test_unknown_recipe_is_refused():
    with pytest.raises(ValueError, match="pacgan2"):
        gan_ring.ring_gan("pacgan")


def test_pack_gives_one_verdict_per_pair_of_consecutive_samples():
    seen = []
    pack = gan_ring.Pack(lambda x: seen.append(x) or x.sum(1, keepdim=True),
                         m=2)
    x = torch.arange(12.0).reshape(6, 2)
    out = pack(x)
    assert seen[0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert out.shape == (3, 1)
    with pytest.raises(ValueError, match="packs of 2"):
        pack(x[:5])  # 5 samples cannot form pairs


def test_minibatch_std_sees_the_spread_of_the_batch():
    seen = []
    layer = gan_ring.MinibatchStd(lambda x: seen.append(x) or x[:, :1])
    spread = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    same = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    layer(spread), layer(same)
    assert seen[0].shape == (2, 3)
    assert torch.allclose(seen[0][:, 2], torch.full((2,), 2 ** 0.5))
    assert torch.equal(seen[1][:, 2], torch.zeros(2))


def test_the_script_writes_one_row_per_recipe_and_seed(tmp_path):
    out = tmp_path / "ring.csv"
    rows = gan_ring.main(["--seeds", "0", "1", "--steps", "4",
                          "--recipes", "vanilla", FIX, "--jobs", "1",
                          "--out", str(out)])
    with open(out) as f:
        written = list(csv.DictReader(f))
    assert [(r["recipe"], r["seed"]) for r in written] == [
        ("vanilla", "0"), ("vanilla", "1"), (FIX, "0"), (FIX, "1")]
    assert list(written[0]) == gan_ring.FIELDS
    assert len(rows) == 4 and all(r["steps"] == 4 for r in rows)


def _committed_rows() -> list[dict]:
    with open(CSV) as f:
        return list(csv.DictReader(f))


def test_the_committed_table_has_every_recipe_for_five_seeds():
    rows = _committed_rows()
    assert sorted((r["recipe"], int(r["seed"])) for r in rows) == sorted(
        (recipe, seed) for recipe in gan_ring.RECIPES for seed in range(5))
    assert {int(r["steps"]) for r in rows} == {9000}


def test_the_committed_table_meets_the_ring_targets():
    rows = _committed_rows()
    vanilla = [r for r in rows if r["recipe"] == "vanilla"]
    assert all(int(r["modes_strict"]) <= 5 for r in vanilla)
    fixed = [r for r in rows if r["recipe"] == FIX]
    within_60_s = [r for r in fixed if r["cpu_s_to_8"]
                   and float(r["cpu_s_to_8"]) <= 60
                   and int(r["modes_strict"]) == 8]
    assert len(within_60_s) >= 4, fixed


def test_the_chapter_live_run_is_the_table_seed_0():
    """Both ran under the pinned numerics: the live run's first 8/8 step
    is the committed seed 0's."""
    nb = json.loads((REPO / "book" / "06_gans.ipynb").read_text())
    text = "".join(
        "".join(o.get("text", "")) for cell in nb["cells"]
        if cell["cell_type"] == "code" for o in cell.get("outputs", []))
    seed0 = next(r for r in _committed_rows()
                 if r["recipe"] == FIX and r["seed"] == "0")
    assert f"first 8/8 at step {seed0['steps_to_8']}" in text
