"""Hostile run folders for ``selfsup report`` and ``selfsup compare``, generated here (no pretraining).

The contract: a damaged *part* of a run (an eval JSON, train_log.csv, config.yaml, a figure) is left out, both pages
say which file was left out and why, the good parts are still shown, the command exits 0 and no file of the run
changes except report.html / report.md. A folder that is not a run folder, or an ``--out`` that is a file, is one
error line. Every text taken from the run is escaped, in the HTML and in the Markdown (outside code fences no raw
``<script`` / ``<img``; a config cannot close its own fence).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from selfsup.cli.main import main
from tests.conftest import run_cli
from tests.hostile.common import assert_clean, refused_untouched, tree

LOG_HEADER = ["step", "loss", "lr", "weight_decay", "ema_momentum", "images_per_s", "data_wait", "time_s",
              "online_loss", "online_top1", "knn_top1", "online_test_top1", "monitor_fraction", "skipped",
              "pretext_top1"]
XSS = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"


def test_log_header_is_the_trainers():
    """The fixtures' header, and the columns the report reads as numbers, are the trainer's own."""
    from selfsup.engine.steplog import StepLog
    from selfsup.eval.plots import TRAIN_LOG_COLUMNS

    assert list(StepLog.FIELDS) == LOG_HEADER == list(TRAIN_LOG_COLUMNS)


def log_text(rows=6, loss=None) -> str:
    lines = [",".join(LOG_HEADER)]
    for i in range(rows):
        cells = {"step": str(i), "loss": f"{2.0 - 0.1 * i:.3f}", "lr": "0.1", "weight_decay": "1e-06",
                 "ema_momentum": "0.99", "images_per_s": "123.4", "data_wait": "0.1", "time_s": f"{1.5 * i:.3f}",
                 "knn_top1": "55.5" if i % 2 else ""}
        lines.append(",".join(cells.get(c, "") for c in LOG_HEADER))
    return "\n".join(lines) + "\n"


def png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (200, 30, 30)).save(path)
    return path


GOOD_EVALS = {
    "knn_shapes": {"protocol": "knn", "dataset": "shapes", "k20_top1": 61.25, "k20_top5": 99.0, "k200_top1": 55.0,
                   "command": "selfsup eval knn -c run", "date": "2024-01-01 10:00"},
    "transfer_linear_cifar": {"protocol": "transfer", "dataset": "cifar", "mode": "linear", "top1": 42.5,
                              "top5": 80.0, "mean_per_class": 41.0, "chosen": {"l2": 0.01},
                              "command": "selfsup eval transfer", "date": "2024-01-02 10:00"},
}


def make_run(path: Path, *, curves: bool = True) -> Path:
    """A run folder as pretraining and two evaluations leave it: config.yaml, train_log.csv, curves.png, evals/."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("name: tiny\nseed: 0\ndata:\n  dataset: shapes\nmodel:\n  backbone: "
                                      "convnet_tiny\nmethod:\n  name: relicv2\ntrain:\n  batch_size: 16\n  steps: 6\n")
    (path / "train_log.csv").write_text(log_text())
    for name, res in GOOD_EVALS.items():
        (path / "evals").mkdir(exist_ok=True)
        (path / "evals" / f"{name}.json").write_text(json.dumps(res))
    if curves:
        png(path / "curves.png")
    return path


def write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)


def eval_json(obj) -> str:
    return json.dumps(obj)


# name: (damage(run), the left-out file as the page names it, words of the reason)
DAMAGE = {
    "eval_list": (lambda r: write(r / "evals" / "bad.json", "[1, 2]"), "evals/bad.json", "must be a mapping"),
    "eval_top1_string": (lambda r: write(r / "evals" / "bad.json", eval_json({"protocol": "linear", "top1": "abc"})),
                         "evals/bad.json", "field top1"),
    "eval_chosen_string": (lambda r: write(r / "evals" / "bad.json",
                                           eval_json({"protocol": "transfer", "top1": 1.0, "chosen": {"lr": "x"}})),
                           "evals/bad.json", "field chosen.lr"),
    "eval_ood_list": (lambda r: write(r / "evals" / "bad.json",
                                      eval_json({"protocol": "robustness", "clean_top1": 3.0, "ood": [1]})),
                      "evals/bad.json", "field ood"),
    "eval_k20_null": (lambda r: write(r / "evals" / "bad.json", eval_json({"protocol": "knn", "k20_top1": None})),
                      "evals/bad.json", "field k20_top1"),
    "eval_labels_fraction_string": (lambda r: write(r / "evals" / "bad.json",
                                                    eval_json({"protocol": "finetune", "labels_fraction": "x"})),
                                    "evals/bad.json", "field labels_fraction"),
    "eval_dataset_number": (lambda r: write(r / "evals" / "bad.json", eval_json({"protocol": "knn", "dataset": 5})),
                            "evals/bad.json", "field dataset"),
    "eval_not_json": (lambda r: write(r / "evals" / "bad.json", "{not json"), "evals/bad.json", "not valid JSON"),
    "eval_binary": (lambda r: write(r / "evals" / "bad.json", bytes(range(256)) * 4), "evals/bad.json", "binary"),
    "eval_folder": (lambda r: (r / "evals" / "bad.json").mkdir(), "evals/bad.json", "not a regular file"),
    "log_binary": (lambda r: write(r / "train_log.csv", b"\x00\xff\xfe" * 1000), "train_log.csv", "binary"),
    "log_non_numeric": (lambda r: write(r / "train_log.csv", log_text() + f"6,{IMG},0.1\n"), "train_log.csv",
                        "column 'loss'"),
    "log_long_field": (lambda r: write(r / "train_log.csv", log_text() + "6," + "9" * 300_000 + "\n"),
                       "train_log.csv", "train_log"),
    "log_bad_step": (lambda r: write(r / "train_log.csv", log_text() + "1.5,0.3\n"), "train_log.csv",
                     "column 'step'"),
    "config_list": (lambda r: write(r / "config.yaml", "- 1\n- 2\n"), "config.yaml", "must be a mapping"),
    "config_train_scalar": (lambda r: write(r / "config.yaml", "name: x\ntrain: 5\n"), "config.yaml", "train"),
    "config_data_list": (lambda r: write(r / "config.yaml", "name: x\ndata: [1]\n"), "config.yaml", "data"),
    "config_batch_string": (lambda r: write(r / "config.yaml", "name: x\ntrain: {batch_size: x}\n"), "config.yaml",
                            "train.batch_size"),
    "config_not_yaml": (lambda r: write(r / "config.yaml", "a: [1\n"), "config.yaml", "not valid YAML"),
    "figure_not_png": (lambda r: write(r / "analysis" / "embedding.png", b"GIF89a not a png"), "analysis/embedding.png",
                       "not a PNG"),
}


def left_out_html(page: str) -> str:
    m = re.search(r'<ul class="left-out">(.*?)</ul>', page, re.S)
    return m.group(1) if m else ""


def left_out_md(md: str) -> str:
    m = re.search(r"^## Left out\n(.*?)(?=^#|\Z)", md, re.S | re.M)
    return m.group(1) if m else ""


def outside_fences(md: str) -> str:
    """The Markdown text outside fenced code blocks (CommonMark: a closing fence is the opening's character, at least
    as long, indented at most 3 spaces, nothing but spaces after it)."""
    out, fence = [], None
    for line in md.splitlines():
        if fence is None:
            m = re.match(r"^ {0,3}(`{3,}|~{3,})", line)
            if m:
                fence = m.group(1)
                continue
            out.append(line)
        else:
            m = re.match(r"^ {0,3}(`+|~+)\s*$", line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
    return "\n".join(out)


def report(capsys, *args: str) -> tuple:
    rc = main(list(args))
    err = capsys.readouterr().err
    return rc, err


def reports(run: Path, out: Path = None):
    out = out or run
    return (out / "report.html").read_text(), (out / "report.md").read_text()


def assert_good_parts(case: str, page: str, md: str) -> None:
    if not case.startswith("eval_"):
        assert "knn_shapes" in page and "| knn_shapes | shapes | 61.25 | 99.00 |" in md
    assert "transfer_linear_cifar" in page and "| transfer_linear_cifar | cifar | 42.50 |" in md
    if not case.startswith("config_"):
        assert "relicv2" in page and "| method | relicv2 |" in md and "batch_size: 16" in md
    if not case.startswith("log_"):
        assert "| steps | 6 |" in md and "| final loss | 1.50 |" in md
    assert page.count('<img src="data:image/png;base64,') == 1 and "![pretraining curves](curves.png)" in md


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_report_leaves_a_damaged_part_out_and_says_so(tmp_path, capsys, caplog, case):
    damage, label, words = DAMAGE[case]
    run = make_run(tmp_path / "run")
    damage(run)
    before = tree(run)
    rc, err = report(capsys, "report", str(run))
    assert rc == 0, err
    after = tree(run)
    assert {k: v for k, v in after.items() if k not in ("report.html", "report.md")} == before
    page, md = reports(run)
    listed = left_out_html(page)
    assert f"<code>{label}</code>" in listed and words.replace("'", "&#x27;") in listed, listed
    listed_md = left_out_md(md)
    assert f"- {label}: " in listed_md and words in listed_md, listed_md
    assert f"report: left out {label}: " in caplog.text  # and a warning on the terminal
    assert_good_parts(case, page, md)
    assert "<img src=x" not in page and "<img" not in outside_fences(md)  # the reason's payload is escaped too


def test_compare_leaves_damaged_parts_out_per_run(tmp_path, capsys):
    runs = []
    for case in sorted(DAMAGE):
        run = make_run(tmp_path / case)
        DAMAGE[case][0](run)
        runs.append(run)
    before = [tree(r) for r in runs]
    rc, err = report(capsys, "compare", *map(str, runs), "--out", str(tmp_path / "cmp"))
    assert rc == 0, err
    assert [tree(r) for r in runs] == before
    page = (tmp_path / "cmp" / "compare.html").read_text()
    md = (tmp_path / "cmp" / "compare.md").read_text()
    listed, listed_md = left_out_html(page), left_out_md(md)
    for case, (_, label, words) in DAMAGE.items():
        assert f"<code>{case}</code>: <code>{label}</code>" in listed, case
        assert f"- {case}: {label}: " in listed_md, case
    assert "transfer_linear_cifar" in page and "| knn_shapes |" in md  # the good parts
    assert (tmp_path / "cmp" / "compare_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "<img src=x" not in page and "<img" not in outside_fences(md)


def test_report_with_every_eval_damaged_at_once_through_the_cli(tmp_path):
    """The real command, in its own process: exit 0, no traceback, each damaged eval named once."""
    run = make_run(tmp_path / "run")
    bad = {f"bad{i}": v for i, v in enumerate(
        ["[1]", eval_json({"top1": "abc"}), eval_json({"protocol": "transfer", "chosen": {"lr": "x"}}),
         eval_json({"protocol": "robustness", "ood": [1]}), eval_json({"protocol": "knn", "k20_top1": None}), "{"])}
    for name, text in bad.items():
        write(run / "evals" / f"{name}.json", text)
    before = tree(run)
    res = run_cli("report", str(run))
    assert_clean(res)
    assert {k: v for k, v in tree(run).items() if k not in ("report.html", "report.md")} == before
    page, md = reports(run)
    for name in bad:
        assert left_out_html(page).count(f"<code>evals/{name}.json</code>") == 1
        assert left_out_md(md).count(f"- evals/{name}.json: ") == 1
    assert "| knn_shapes | shapes | 61.25 |" in md


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    file = tmp_path / "taken.txt"
    file.write_text("mine")
    refused_untouched([run, tmp_path], "report", str(run), "--out", str(file), words=["--out", str(file)])
    refused_untouched([run, tmp_path], "compare", str(run), str(run), "--out", str(file), words=["--out", str(file)])
    for args in (["report", str(run)], ["compare", str(run)]):  # a folder under a file cannot be created either
        before = tree(tmp_path)
        rc, err = report(capsys, *args, "--out", str(file / "sub"))
        assert rc == 2 and err.count("\n") == 1 and err.startswith("selfsup: error: --out") and "taken.txt" in err
        assert tree(tmp_path) == before


def test_not_a_run_folder_is_one_line_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = make_run(tmp_path / "run")
    for args in (["report", str(empty)], ["report", str(tmp_path / "missing")],
                 ["compare", str(run), str(empty), "--out", str(tmp_path / "cmp")]):
        before = tree(tmp_path)
        rc, err = report(capsys, *args)
        assert rc == 2 and err.count("\n") == 1 and err.startswith("selfsup: error:"), err
        assert tree(tmp_path) == before  # not even the --out folder


def test_report_elsewhere_draws_missing_curves_there_and_replaces_links_not_targets(tmp_path, capsys):
    run = make_run(tmp_path / "run", curves=False)
    before = tree(run)
    out = tmp_path / "pages"
    rc, err = report(capsys, "report", str(run), "--out", str(out))
    assert rc == 0, err
    assert tree(run) == before  # the run folder is only read
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    page, md = reports(run, out)
    assert page.count('<img src="data:image/png;base64,') == 1 and "![pretraining curves](curves.png)" in md
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(victim)
    assert report(capsys, "report", str(run), "--out", str(out))[0] == 0
    assert victim.read_text() == "not yours" and not (out / "report.md").is_symlink()


def test_markdown_and_html_escape_everything_from_the_run(tmp_path, capsys):
    run = make_run(tmp_path / f"{IMG} <script>alert(1)")
    (run / "config.yaml").write_text(
        "name: |-\n   ```\n   " + XSS + "\n   " + IMG + "\n   ````````\n"
        f"method:\n  name: '{XSS}'\nmodel:\n  backbone: '{IMG}'\ndata:\n  dataset: shapes\n"
        f"# {XSS} ``` {IMG}\n")
    write(run / "evals" / f"linear_{IMG}.json",
          eval_json({"protocol": "linear", "top1": 10.0, "l2": 0.1, "dataset": XSS + "|x", "date": IMG,
                     "command": f"selfsup eval linear {IMG} `rm -rf` {XSS}"}))
    write(run / "evals" / "robustness_x.json",
          eval_json({"protocol": "robustness", "clean_top1": 70.0, "mean_corrupted_top1": 35.0, "dataset": IMG,
                     "corruptions": {"fog": 40.0, XSS: 30.0}, "ood": {f"/d/{IMG}": 20.0}}))
    write(run / "evals" / "bad.json", eval_json({"protocol": "linear", "top1": XSS}))
    png(run / "analysis" / f"{IMG}.png")
    rc, err = report(capsys, "report", str(run))
    assert rc == 0, err
    page, md = reports(run)
    for text, what in ((page, "report.html"), (outside_fences(md), "report.md outside fences")):
        low = text.lower()
        assert "<script>alert" not in low and "<img src=x" not in low, what
    assert "<img" not in outside_fences(md).lower() and "<script" not in outside_fences(md).lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in md  # shown, not dropped
    assert "evals/bad.json" in left_out_md(md) and "&lt;script&gt;" in left_out_md(md)
    row = next(ln for ln in md.splitlines() if ln.startswith("| linear_"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 6, row  # the pipe in the dataset does not split the row
    assert "`rm" not in outside_fences(md)  # no code span from the run's text either
    # the config is in one fence that its own ``` / ```````` lines cannot close
    assert XSS in md and "\n`````````yaml\n" in md and "\n```yaml" not in md
    compare_out = tmp_path / "cmp"
    rc, err = report(capsys, "compare", str(run), str(make_run(tmp_path / "plain $x^$")), "--out", str(compare_out))
    assert rc == 0, err
    assert (compare_out / "compare_curves.png").is_file()  # a run name is no mathtext for the legend either
    cpage, cmd = (compare_out / "compare.html").read_text(), (compare_out / "compare.md").read_text()
    assert "<script>alert" not in cpage.lower() and "<img src=x" not in cpage.lower()
    assert "<img" not in outside_fences(cmd).lower() and "<script" not in outside_fences(cmd).lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in cmd


@pytest.mark.parametrize("bad", [b"\x00\xff" * 100, (log_text() + "6,abc\n").encode(),
                                 (log_text() + "6," + "9" * 300_000 + "\n").encode()], ids=["binary", "cell", "long"])
def test_pretrain_curves_of_a_damaged_log_are_a_warning(tmp_path, caplog, bad):
    """pretrain draws curves.png from its log in a `finally`: a damaged log is a warning there, never a traceback
    (which would also hide the run's own outcome)."""
    from selfsup.experiments.pretraining import draw_curves as _draw_curves

    (tmp_path / "train_log.csv").write_bytes(bad)
    assert _draw_curves(tmp_path, "run") is None
    assert "could not draw" in caplog.text and "train_log.csv" in caplog.text
    assert not (tmp_path / "curves.png").exists()
    (tmp_path / "train_log.csv").write_text(log_text())
    assert _draw_curves(tmp_path, "run $x^$") == tmp_path / "curves.png"  # and a good one is drawn
