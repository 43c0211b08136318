"""Reports: a run's page holds its summary, every kept evaluation, the robustness table and every figure, inlined;
compare puts runs side by side; and a real headless browser (Debian's chromium) renders the page with every figure
decoded, and screenshots it."""

import json
import os
import shutil
import subprocess

import pytest

from selfsup.errors import ConfigError
from selfsup.eval.report import write_report
from selfsup.eval.report_compare import write_compare
from selfsup.eval.report_run import eval_row, read_run
from tests.conftest import TINY, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_eval_rows_name_the_headline_numbers():
    assert eval_row("knn_shapes", {"protocol": "knn", "k20_top1": 61.0, "k20_top5": 99.0, "k200_top1": 55.0,
                                   "dataset": "shapes"})["detail"] == "k=20: 61.00, k=200: 55.00"
    r = eval_row("finetune_relicv2_semi_1pct_fashion_mnist",
                 {"protocol": "finetune", "top1": 78.9, "top5": 99.2, "labels_fraction": 0.01, "num_train": 600,
                  "head": "backbone", "epochs": 20})
    assert r["top1"] == 78.9 and "1% labels (600 images)" in r["detail"]
    r = eval_row("robustness_x", {"protocol": "robustness", "clean_top1": 70.0, "mean_corrupted_top1": 40.0,
                                  "corruptions": {"fog": 40.0}, "ood": {"/d/sketch": 33.0}})
    assert r["top1"] == 70.0 and "ImageNet-C mean 40.00" in r["detail"] and "OOD sketch: 33.00" in r["detail"]


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a selfsup run folder"):
        read_run(tmp_path)


@pytest.fixture(scope="module")
def run_with_evals(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    run = tmp / "run"
    assert run_cli("pretrain", *TINY, f"out={run}", "monitor.knn_every_steps=2").returncode == 0
    for args in (["knn"], ["linear", "eval.linear.l2_grid=[0.01]"],
                 ["robustness", "--corruptions", "contrast,fog", "--severities", "1", "--test-limit", "8"]):
        r = run_cli("eval", args[0], "-c", str(run), "--quiet", *args[1:])
        assert r.returncode == 0, r.stderr[-2000:]
    r = run_cli("analyze", str(run), "--per-class", "4", "--max-points", "32", "--quiet", "--no-curve")
    assert r.returncode == 0, r.stderr[-2000:]
    return run


@pytest.mark.slow
def test_report_holds_everything(run_with_evals):
    run = run_with_evals
    assert sorted(p.name for p in (run / "evals").glob("*.json")) == [
        "knn_shapes.json", "linear_lbfgs_shapes.json", "robustness_shapes.json"]
    assert json.loads((run / "evals" / "knn_shapes.json").read_text())["command"].startswith("selfsup eval knn")
    r = run_cli("report", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    page = (run / "report.html").read_text()
    for text in ("knn_shapes", "linear_lbfgs_shapes", "robustness_shapes", "Contrast", "Fog", "relicv2",
                 "pretraining curves", "nn distances", "discriminant ratio", "embedding"):
        assert text in page, text
    assert page.count("<img src=\"data:image/png;base64,") == 4  # curves + 3 analysis figures, all inlined
    assert "http://" not in page and "https://" not in page  # nothing fetched
    md = (run / "report.md").read_text()
    assert "| knn_shapes | shapes |" in md and "![pretraining curves](curves.png)" in md


@pytest.mark.slow
def test_compare_two_runs(run_with_evals, tmp_path):
    other = tmp_path / "other"
    assert run_cli("pretrain", *TINY, f"out={other}", "seed=1").returncode == 0
    html_path, md_path = write_compare([run_with_evals, other], tmp_path / "cmp")
    page = html_path.read_text()
    assert "run" in page and "other" in page and "knn_shapes" in page
    assert (tmp_path / "cmp" / "compare_curves.png").stat().st_size > 5000
    assert "| knn_shapes |" in md_path.read_text()


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("SELFSUP_REQUIRE_BROWSER"),
                    reason="no chromium (CI installs it and sets SELFSUP_REQUIRE_BROWSER=1)")
def test_report_renders_in_a_real_browser(run_with_evals, tmp_path):
    assert CHROMIUM, "chromium is required here (SELFSUP_REQUIRE_BROWSER=1): apt-get install chromium"
    html_path, _ = write_report(run_with_evals, tmp_path / "page")
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*flags, "--virtual-time-budget=5000", "--dump-dom", html_path.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-figures="ok 4"' in dom  # every <img> decoded in the browser (the page's own check)
    shot = tmp_path / "page" / "screenshot.png"
    subprocess.run([*flags, "--window-size=1280,2400", f"--screenshot={shot}", html_path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000
