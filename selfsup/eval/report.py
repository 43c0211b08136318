"""One page per run (``selfsup report RUN``) and one page for several runs side by side (``selfsup compare RUN...``).

A run folder holds what the page shows: ``config.yaml``, ``train_log.csv`` (loss, learning rate, the monitored
accuracies), ``evals/*.json`` (every ``selfsup eval ...`` of the run writes one; the file name says the protocol,
setting and dataset) and figures (``curves.png``; ``analysis/*.png`` from ``selfsup analyze``). The HTML is
self-contained (figures inlined as data URIs, no scripts or styles fetched), so it can be mailed or archived; the
Markdown next to it links the PNG files. A small inline script marks ``<body data-figures="ok N">`` once every figure
has decoded in the browser (``broken ...`` otherwise), which the browser test reads.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from selfsup.errors import ConfigError

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em} td,th{border:1px solid #ccc;padding:4px 9px}
th{background:#f4f4f4;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;border:1px solid #eee;margin:6px 0} pre{background:#f7f7f7;padding:10px;overflow-x:auto;
font-size:.85em} .muted{color:#777;font-size:.85em} figure{margin:0 0 14px 0} figcaption{color:#555;font-size:.9em}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-figures', bad.length ? 'broken ' + bad.map(function (i) { return i.alt; }).join(',')
                                                        : 'ok ' + imgs.length);
});
"""


# --------------------------------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------------------------------

def _rows(train_log: Path) -> List[Dict[str, str]]:
    if not train_log.is_file():
        return []
    with open(train_log, newline="") as f:
        return list(csv.DictReader(f))


def _last(rows: List[Dict[str, str]], key: str) -> Optional[float]:
    for r in reversed(rows):
        if r.get(key) not in ("", None):
            return float(r[key])
    return None


def read_run(run_dir: Path) -> Dict[str, Any]:
    """Everything a report shows, read from a run folder (a missing piece is simply absent)."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run folder")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file() and not (run_dir / "train_log.csv").is_file():
        raise ConfigError(f"{run_dir} holds neither config.yaml nor train_log.csv: not a selfsup run folder")
    config_text = cfg_path.read_text() if cfg_path.is_file() else ""
    try:
        config = yaml.safe_load(config_text) or {} if config_text else {}
    except yaml.YAMLError:
        config = {}
    rows = _rows(run_dir / "train_log.csv")
    evals = []
    for p in sorted((run_dir / "evals").glob("*.json")) if (run_dir / "evals").is_dir() else []:
        try:
            evals.append((p.stem, json.loads(p.read_text())))
        except (OSError, json.JSONDecodeError):
            continue
    curves = run_dir / "curves.png"
    if rows and not curves.is_file():
        from selfsup.eval.plots import plot_curves

        try:
            plot_curves(run_dir / "train_log.csv", curves, title=f"{config.get('name', run_dir.name)}: loss")
        except (ValueError, OSError):
            pass
    figures: List[Tuple[str, Path]] = []
    if curves.is_file():
        figures.append(("pretraining curves", curves))
    for p in sorted((run_dir / "analysis").glob("*.png")) if (run_dir / "analysis").is_dir() else []:
        figures.append((p.stem.replace("_", " "), p))
    train = config.get("train") or {}
    batch = train.get("batch_size")
    step = int(float(rows[-1]["step"])) + 1 if rows else None
    summary = {
        "run": run_dir.name, "method": (config.get("method") or {}).get("name"),
        "backbone": (config.get("model") or {}).get("backbone"), "dataset": (config.get("data") or {}).get("dataset"),
        "steps": step, "images seen": step * batch if step and batch else None, "batch": batch,
        "training minutes": round(_last(rows, "time_s") / 60, 1) if _last(rows, "time_s") else None,
        "images/s": round(_last(rows, "images_per_s"), 1) if _last(rows, "images_per_s") else None,
        "final loss": round(_last(rows, "loss"), 4) if _last(rows, "loss") is not None else None,
        "monitor kNN top-1": _last(rows, "knn_top1"), "monitor online linear top-1": _last(rows, "online_test_top1"),
    }
    return {"dir": run_dir, "config_text": config_text, "config": config, "summary": summary, "evals": evals,
            "figures": figures, "rows": rows}


def eval_row(name: str, res: Dict[str, Any]) -> Dict[str, Any]:
    """One table row of an evaluation: its headline top-1 (and top-5) and what else defines it."""
    proto = res.get("protocol", name.split("_")[0])
    top1 = res.get("top1", res.get("k20_top1", res.get("clean_top1")))
    top5 = res.get("top5", res.get("k20_top5"))
    detail = []
    if proto == "knn":
        ks = sorted(int(k[1:-5]) for k in res if k.startswith("k") and k.endswith("_top1"))
        detail.append(", ".join(f"k={k}: {res[f'k{k}_top1']:.2f}" for k in ks))
        if "k20_top1" not in res and ks:
            top1, top5 = res[f"k{ks[0]}_top1"], res.get(f"k{ks[0]}_top5")
    if proto == "finetune":
        detail.append(f"{100 * float(res.get('labels_fraction', 1)):g}% labels ({res.get('num_train')} images), "
                      f"classifier on the {res.get('head', 'backbone')}, {res.get('epochs')} epochs")
    if proto == "transfer":
        chosen = ", ".join(f"{k}={v:g}" for k, v in (res.get("chosen") or {}).items())
        detail.append(f"{res.get('mode')}; mean per-class {res.get('mean_per_class', float('nan')):.2f}; {chosen}")
    if proto == "linear" and "l2" in res:
        detail.append(f"L-BFGS, l2={res['l2']:g}")
    if proto == "robustness":
        if "mean_corrupted_top1" in res:
            detail.append(f"clean {res['clean_top1']:.2f}; ImageNet-C mean {res['mean_corrupted_top1']:.2f}")
        for root, acc in (res.get("ood") or {}).items():
            detail.append(f"OOD {Path(root).name}: {acc:.2f}")
    return {"name": name, "protocol": proto, "dataset": res.get("dataset"), "top1": top1, "top5": top5,
            "detail": "; ".join(d for d in detail if d), "command": res.get("command", ""), "date": res.get("date", "")}


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _img(path: Path, alt: str, inline: bool) -> str:
    src = ("data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()) if inline else path.name
    return f'<img src="{src}" alt="{html.escape(alt)}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def _robustness_blocks(evals: List[Tuple[str, Dict[str, Any]]]) -> List[Tuple[str, List[str]]]:
    from selfsup.eval.robustness import robustness_table

    return [(name, robustness_table(res)) for name, res in evals
            if res.get("protocol") == "robustness" and res.get("corruptions")]


def _page(title: str, body: List[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html.escape(title)
            + f"</title><style>{CSS}</style></head><body>" + "\n".join(body) + f"<script>{SCRIPT}</script>"
            + "</body></html>\n")


def render_run_html(run: Dict[str, Any]) -> str:
    s = run["summary"]
    body = [f"<h1>{html.escape(str(s['run']))}</h1>",
            f"<p class=\"muted\">selfsup report, {time.strftime('%Y-%m-%d %H:%M')}, {html.escape(str(run['dir']))}</p>",
            "<h2>Run</h2>", _table(["", "value"], [(k, v) for k, v in s.items() if k != "run"], numeric=[1])]
    body.append("<h2>Evaluations</h2>")
    if run["evals"]:
        rows = [eval_row(n, r) for n, r in run["evals"]]
        body.append(_table(["evaluation", "dataset", "top-1 %", "top-5 %", "details", "date"],
                           [(r["name"], r["dataset"], r["top1"], r["top5"], r["detail"], r["date"]) for r in rows],
                           numeric=[2, 3]))
        body.append("<details><summary>commands</summary><pre>" + html.escape(
            "\n".join(r["command"] for r in rows if r["command"])) + "</pre></details>")
    else:
        body.append("<p>No evaluation yet: <code>selfsup eval linear -c RUN</code>, <code>eval knn</code>, "
                    "<code>eval finetune</code>, <code>eval transfer</code>, <code>eval robustness</code> keep their "
                    "results in <code>RUN/evals/</code>.</p>")
    for name, lines in _robustness_blocks(run["evals"]):
        body.append(f"<h2>Robustness: {html.escape(name)}</h2>")
        head = [c.strip() for c in lines[0].strip("|").split("|")]
        vals = [c.strip() for c in lines[2].strip("|").split("|")]
        body.append(_table(head, [vals], numeric=list(range(len(head)))))
    if run["figures"]:
        body.append("<h2>Figures</h2>")
        for caption, path in run["figures"]:
            body.append(f"<figure>{_img(path, caption, True)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    body += ["<h2>Config</h2>", f"<pre>{html.escape(run['config_text'] or '(no config.yaml)')}</pre>"]
    return _page(f"selfsup report: {s['run']}", body)


def render_run_markdown(run: Dict[str, Any], out_dir: Path) -> str:
    s = run["summary"]
    lines = [f"# {s['run']}", "", "| | |", "|---|---:|"] + [f"| {k} | {_fmt(v)} |" for k, v in s.items() if k != "run"]
    lines += ["", "## Evaluations", ""]
    if run["evals"]:
        lines += ["| evaluation | dataset | top-1 % | top-5 % | details |", "|---|---|---:|---:|---|"]
        for n, r in run["evals"]:
            e = eval_row(n, r)
            lines.append(f"| {e['name']} | {e['dataset']} | {_fmt(e['top1'])} | {_fmt(e['top5'])} | {e['detail']} |")
    else:
        lines.append("No evaluation yet.")
    for name, table in _robustness_blocks(run["evals"]):
        lines += ["", f"## Robustness: {name}", "", *table]
    if run["figures"]:
        lines += ["", "## Figures", ""]
        for caption, path in run["figures"]:
            rel = Path(path).resolve().relative_to(out_dir.resolve()) if _inside(path, out_dir) else Path(path)
            lines.append(f"![{caption}]({rel})")
    lines += ["", "## Config", "", "```yaml", run["config_text"].rstrip(), "```", ""]
    return "\n".join(lines)


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def write_report(run_dir: Path, out: Optional[Path] = None) -> Tuple[Path, Path]:
    """``report.html`` (self-contained) and ``report.md`` for a run; in the run folder unless ``out`` is given."""
    run = read_run(Path(run_dir))
    out = Path(out) if out else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(render_run_html(run))
    md_path.write_text(render_run_markdown(run, out))
    return html_path, md_path


def write_compare(run_dirs: Sequence[Path], out: Path) -> Tuple[Path, Path]:
    """``compare.html`` and ``compare.md``: the runs' summaries, their evaluations side by side (one row per evaluation
    name, one column per run) and their loss and monitored-kNN curves overlaid."""
    if len(run_dirs) < 1:
        raise ConfigError("compare needs at least one run folder")
    runs = [read_run(Path(d)) for d in run_dirs]
    names = []
    for r in runs:
        n = r["summary"]["run"]
        while n in names:
            n += "'"
        names.append(n)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = _plot_overlay(runs, names, out / "compare_curves.png")
    keys = [k for k in runs[0]["summary"] if k != "run"]
    summary_rows = [[k] + [r["summary"].get(k) for r in runs] for k in keys]
    eval_names = sorted({n for r in runs for n, _ in r["evals"]})
    cell = {(i, n): eval_row(n, res) for i, r in enumerate(runs) for n, res in r["evals"]}
    eval_rows = [[n] + [cell[(i, n)]["top1"] if (i, n) in cell else None for i in range(len(runs))]
                 for n in eval_names]
    body = [f"<h1>selfsup compare: {len(runs)} runs</h1>",
            f"<p class=\"muted\">{time.strftime('%Y-%m-%d %H:%M')}</p>",
            "<h2>Runs</h2>", _table([""] + names, summary_rows, numeric=list(range(1, len(names) + 1))),
            "<h2>Evaluations (top-1 %)</h2>",
            _table(["evaluation"] + names, eval_rows, numeric=list(range(1, len(names) + 1)))
            if eval_rows else "<p>No evaluation in any of the runs.</p>"]
    if png is not None:
        body += ["<h2>Curves</h2>", f"<figure>{_img(png, 'curves overlaid', True)}</figure>"]
    html_path, md_path = out / "compare.html", out / "compare.md"
    html_path.write_text(_page("selfsup compare", body))
    md = ["# selfsup compare", "", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    md += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in summary_rows]
    if eval_rows:
        md += ["", "## Evaluations (top-1 %)", "", "| evaluation | " + " | ".join(names) + " |",
               "|---|" + "---:|" * len(names)] + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in eval_rows]
    if png is not None:
        md += ["", f"![curves]({png.name})"]
    md_path.write_text("\n".join(md) + "\n")
    return html_path, md_path


def _plot_overlay(runs: List[Dict[str, Any]], names: List[str], png: Path) -> Optional[Path]:
    from selfsup.eval.plots import plt, save_figure

    if not any(r["rows"] for r in runs):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    for i, (r, name) in enumerate(zip(runs, names)):
        rows = r["rows"]
        if not rows:
            continue
        axes[0].plot([float(x["step"]) for x in rows], [float(x["loss"]) for x in rows], color=f"C{i}", lw=1,
                     label=name)
        knn = [(float(x["step"]), float(x["knn_top1"])) for x in rows if x.get("knn_top1") not in ("", None)]
        if knn:
            axes[1].plot(*zip(*knn), marker="o", ms=3, color=f"C{i}", label=name)
    axes[0].set(xlabel="step", ylabel="loss", title="pretraining loss")
    axes[1].set(xlabel="step", ylabel="kNN top-1 (%)", title="monitored kNN (test subset)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)
