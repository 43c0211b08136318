"""One page per run (``selfsup report RUN``); several runs side by side are :mod:`selfsup.eval.report_compare`.

A run folder holds what the page shows: ``config.yaml``, ``train_log.csv`` (loss, learning rate, the monitored
accuracies), ``evals/*.json`` (every ``selfsup eval ...`` of the run writes one; the file name says the protocol,
setting and dataset) and figures (``curves.png``; ``analysis/*.png`` from ``selfsup analyze``). The HTML is
self-contained (figures inlined as data URIs, no scripts or styles fetched), so it can be mailed or archived; the
Markdown next to it links the PNG files. A small inline script marks ``<body data-figures="ok N">`` once every figure
has decoded in the browser (``broken ...`` otherwise), which the browser test reads.

Every file is read through :mod:`selfsup.metafiles` and every field the page uses is type-checked. A report is the
user's window onto a run, so a damaged part (an eval JSON that is not a mapping or has a string where a number belongs,
a binary or non-numeric ``train_log.csv``, a ``config.yaml`` that is not a mapping, a figure that is not a PNG) is
left out, and both pages list what was left out and why; the command still succeeds. A folder that is not a run
folder at all, or an output folder that cannot be written, is one error line. Every text that comes from the run is
escaped: for HTML by :func:`html.escape`, for Markdown by :func:`~selfsup.eval.report_md.md_escape` (and the config is
fenced by a fence longer than any backtick run in it).

The parts: :mod:`~selfsup.eval.report_run` reads a run and checks its fields, :mod:`~selfsup.eval.report_html` and
:mod:`~selfsup.eval.report_md` render the two pages, and this module writes them (each file replaced atomically).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

from selfsup.errors import ConfigError, SelfsupError
from selfsup.eval.report_html import render_run_html
from selfsup.eval.report_md import render_run_markdown
from selfsup.eval.report_run import check_run_dir, one_line_reason, present, read_run
from selfsup.metafiles import make_output_dir

log = logging.getLogger("selfsup")


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


def _replace(tmp: Path, path: Path) -> None:
    """``tmp`` renamed onto ``path`` (a symlink at ``path`` is replaced, never written through); one error line
    when ``path`` cannot be replaced (e.g. it is a folder)."""
    try:
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> Path:
    """``text`` written to a temporary file beside ``path``, then renamed onto it; one error line on failure."""
    tmp = _temp_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    _replace(tmp, path)
    return path


def write_figure(draw, png: Path) -> Path:
    """``draw(tmp_png)`` then the figure renamed onto ``png``."""
    tmp = _temp_beside(png)
    try:
        draw(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, png)
    return png


def _output_dir(out: Optional[Path], run_dir: Path) -> Path:
    if out is not None:
        return make_output_dir(out, "--out")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise ConfigError(f"the run folder {run_dir} is not writable; write the report elsewhere with --out FOLDER")
    return run_dir


def warn_left_out(items: Sequence[Tuple[str, ...]], what: str) -> None:
    """One warning per part left out of a page."""
    for item in items:
        log.warning("%s: left out %s", what, ": ".join(item))


def write_report(run_dir: Path, out: Optional[Path] = None) -> Tuple[Path, Path]:
    """``report.html`` (self-contained) and ``report.md`` for a run; in the run folder unless ``out`` is given.
    Damaged parts of the run are left out and listed on both pages (and warned about)."""
    run_dir = check_run_dir(Path(run_dir))
    out = _output_dir(Path(out) if out else None, run_dir)
    run = read_run(run_dir)
    if run["rows"] and not present(run_dir / "curves.png"):  # a run killed before drawing its curves
        from selfsup.eval.plots import plot_curves

        png = out / "curves.png"
        try:
            write_figure(lambda tmp: plot_curves(run_dir / "train_log.csv", tmp, rows=run["rows"],
                                                 title=f"{run['name']}: loss"), png)
            run["figures"].insert(0, ("pretraining curves", png, png.read_bytes()))
        except (SelfsupError, ValueError, OSError) as exc:
            run["left_out"].append(("curves.png", f"could not be drawn: {one_line_reason(exc, png)}"))
    html_path, md_path = out / "report.html", out / "report.md"
    write_text(html_path, render_run_html(run))
    write_text(md_path, render_run_markdown(run, out))
    warn_left_out(run["left_out"], "report")
    return html_path, md_path
