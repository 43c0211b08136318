"""Analysis: neighbour structure and discriminant ratios against direct computations, the t-SNE shape, snapshots every
N steps with their images seen, and the CLI writing every figure."""

import json

import pytest
import torch

from selfsup.errors import ConfigError
from selfsup.eval.analysis import discriminant_ratios, embedding_2d, nn_distances, pick_classes
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _clusters(n_per=6, classes=3, spread=0.01, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(8)[:classes] * 5
    x = torch.cat([centres[c] + spread * torch.randn(n_per, 8, generator=g) for c in range(classes)])
    y = torch.arange(classes).repeat_interleave(n_per)
    perm = torch.randperm(len(y), generator=g)
    return x[perm], y[perm]


def test_neighbours_of_separated_classes_are_all_in_class():
    x, y = _clusters()
    r = nn_distances(x, y, [2, 0], per_class=4, k=3)
    assert r["same_class"] == 1.0 and r["block"] == [0, 4, 8]
    assert r["labels"].tolist() == [2] * 4 + [0] * 4  # classes in the order asked for
    assert (r["neighbours"] != torch.arange(8)[:, None]).all()  # never itself
    assert (r["distances"][:, :-1] <= r["distances"][:, 1:]).all()


def test_discriminant_ratio_matches_a_direct_loop():
    x, y = _clusters(n_per=4, spread=1.0, seed=1)
    r = discriminant_ratios(x, y)
    xn = torch.nn.functional.normalize(x, dim=1)
    for i in (0, 5, 11):
        same = [j for j in range(len(y)) if y[j] == y[i] and j != i]
        other = [j for j in range(len(y)) if y[j] != y[i]]
        within = sum(float((xn[i] - xn[j]).norm()) for j in same) / len(same)
        between = sum(float((xn[i] - xn[j]).norm()) for j in other) / len(other)
        assert float(r["ratios"][i]) == pytest.approx(between / within, rel=1e-4)
    tight = discriminant_ratios(*_clusters(spread=0.01))
    assert tight["median"] > r["median"] > 0


def test_embedding_and_class_choice():
    x, y = _clusters(n_per=20)
    pts, labels = embedding_2d(x, y, max_points=50)
    assert pts.shape == (50, 2) and labels.shape == (50,)
    assert pick_classes(["a", "b", "c"], 3, ["c", "0"]) == [2, 0]
    assert pick_classes(None, 10, []) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="no class 'z'"):
        pick_classes(["a", "b"], 2, ["z"])


@pytest.mark.slow
def test_cli_analyze_with_step_snapshots(tmp_path):
    run = tmp_path / "run"
    r = run_cli("pretrain", *TINY, f"out={run}", "train.snapshot_every_steps=2")
    assert r.returncode == 0, r.stderr[-2000:]
    snaps = sorted(p.name for p in (run / "snapshots").glob("*.safetensors"))
    assert snaps == ["backbone_step00000002.safetensors", "backbone_step00000004.safetensors",
                     "backbone_step00000006.safetensors"]
    out = tmp_path / "an"
    r = run_cli("analyze", str(run), "--random-init", "--out", str(out), "--per-class", "4", "--max-points", "32",
                "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "analysis.json").read_text())
    assert [p[0] for p in res["runs"]["run"]["curve"]] == [32, 64, 96]  # images seen = step x batch 16
    assert "curve" not in res["runs"]["random init"]
    for name in ("nn_distances", "discriminant_ratio", "embedding", "accuracy_vs_images"):
        png = out / f"{name}.png"
        assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    r = run_cli("analyze", str(run), "--classes", "hexagon", "--out", str(out))
    assert r.returncode == 2 and "no class 'hexagon'" in r.stderr
