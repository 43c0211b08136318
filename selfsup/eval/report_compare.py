"""Several runs side by side (``selfsup compare RUN...``): ``compare.html`` and ``compare.md``.

The runs are read as for ``selfsup report`` (:func:`~selfsup.eval.report_run.read_run`): a damaged part of a run is
left out and listed (run, file, reason), and the pages use the same tables, escaping and atomic writes as the run page.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from selfsup.errors import ConfigError
from selfsup.eval.report import warn_left_out, write_figure, write_text
from selfsup.eval.report_html import html_img, html_page, html_table, left_out_html
from selfsup.eval.report_md import left_out_md, md_row
from selfsup.eval.report_run import check_run_dir, eval_row, one_line_reason, read_run
from selfsup.metafiles import make_output_dir


def _unique_names(runs: List[Dict[str, Any]]) -> List[str]:
    """The runs' folder names, a ``'`` added to each repeat so that every column has its own name."""
    names: List[str] = []
    for r in runs:
        n = r["summary"]["run"]
        while n in names:
            n += "'"
        names.append(n)
    return names


def _compare_html(runs, names, left_out, summary_rows, eval_rows, png: Optional[Path]) -> str:
    body = [f"<h1>selfsup compare: {len(runs)} runs</h1>",
            f"<p class=\"muted\">{time.strftime('%Y-%m-%d %H:%M')}</p>"]
    body += left_out_html(left_out)
    body += ["<h2>Runs</h2>", html_table([""] + names, summary_rows, numeric=list(range(1, len(names) + 1))),
             "<h2>Evaluations (top-1 %)</h2>",
             html_table(["evaluation"] + names, eval_rows, numeric=list(range(1, len(names) + 1)))
             if eval_rows else "<p>No evaluation in any of the runs.</p>"]
    if png is not None:
        body += ["<h2>Curves</h2>", f"<figure>{html_img(png.read_bytes(), 'curves overlaid')}</figure>"]
    return html_page("selfsup compare", body)


def _compare_md(names, left_out, summary_rows, eval_rows, png: Optional[Path]) -> str:
    md = ["# selfsup compare"] + left_out_md(left_out)
    md += ["", md_row([""] + names), "|---|" + "---:|" * len(names)]
    md += [md_row(row) for row in summary_rows]
    if eval_rows:
        md += ["", "## Evaluations (top-1 %)", "", md_row(["evaluation"] + names),
               "|---|" + "---:|" * len(names)] + [md_row(row) for row in eval_rows]
    if png is not None:
        md += ["", f"![curves]({quote(png.name)})"]
    return "\n".join(md) + "\n"


def write_compare(run_dirs: Sequence[Path], out: Path) -> Tuple[Path, Path]:
    """``compare.html`` and ``compare.md``: the runs' summaries, their evaluations side by side (one row per evaluation
    name, one column per run) and their loss and monitored-kNN curves overlaid. Damaged parts of a run are left out
    and listed (run, file, reason)."""
    if len(run_dirs) < 1:
        raise ConfigError("compare needs at least one run folder")
    run_dirs = [check_run_dir(Path(d)) for d in run_dirs]
    out = make_output_dir(out, "--out")
    runs = [read_run(d) for d in run_dirs]
    names = _unique_names(runs)
    left_out = [(name, *item) for name, r in zip(names, runs) for item in r["left_out"]]
    try:
        png = _plot_overlay(runs, names, out / "compare_curves.png")
    except (ValueError, OSError) as exc:  # the page matters more than its figure
        png = None
        left_out.append(("compare", "compare_curves.png", f"could not be drawn: {one_line_reason(exc, out)}"))
    keys = [k for k in runs[0]["summary"] if k != "run"]
    summary_rows = [[k] + [r["summary"].get(k) for r in runs] for k in keys]
    eval_names = sorted({n for r in runs for n, _ in r["evals"]})
    cell = {(i, n): eval_row(n, res) for i, r in enumerate(runs) for n, res in r["evals"]}
    eval_rows = [[n] + [cell[(i, n)]["top1"] if (i, n) in cell else None for i in range(len(runs))]
                 for n in eval_names]
    html_path, md_path = out / "compare.html", out / "compare.md"
    write_text(html_path, _compare_html(runs, names, left_out, summary_rows, eval_rows, png))
    write_text(md_path, _compare_md(names, left_out, summary_rows, eval_rows, png))
    warn_left_out(left_out, "compare")
    return html_path, md_path


def _mpl_text(text: str) -> str:
    """``text`` as a matplotlib label shown as itself (a ``$`` would start mathtext, and bad mathtext raises)."""
    return " " + text.replace("$", r"\$") if text.startswith("_") else text.replace("$", r"\$")


def _plot_overlay(runs: List[Dict[str, Any]], names: List[str], png: Path) -> Optional[Path]:
    from selfsup.eval.plots import log_series, plt, save_figure

    if not any(r["rows"] for r in runs):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), dpi=110)
    for i, (r, name) in enumerate(zip(runs, names)):
        loss = log_series(r["rows"], "loss")
        if loss:
            axes[0].plot(*zip(*loss), color=f"C{i}", lw=1, label=_mpl_text(name))
        knn = log_series(r["rows"], "knn_top1")
        if knn:
            axes[1].plot(*zip(*knn), marker="o", ms=3, color=f"C{i}", label=_mpl_text(name))
    axes[0].set(xlabel="step", ylabel="loss", title="pretraining loss")
    axes[1].set(xlabel="step", ylabel="kNN top-1 (%)", title="monitored kNN (test subset)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return write_figure(lambda tmp: save_figure(fig, tmp), png)
