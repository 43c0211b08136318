"""One page per run (``selfsup report RUN``) and one page for several runs side by side (``selfsup compare RUN...``).

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
escaped: for HTML by :func:`html.escape`, for Markdown by :func:`md_escape` (and the config is fenced by a fence longer
than any backtick run in it).
"""

from __future__ import annotations

import base64
import html
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple
from urllib.parse import quote

from selfsup.errors import ConfigError, DataError, SelfsupError
from selfsup.eval.protocols import protocol_for_result
from selfsup.metafiles import Fields, make_output_dir, read_json, read_yaml_mapping

log = logging.getLogger("selfsup")

#: the sections of a run's config.yaml (selfsup.config.Config), each a mapping when present
CONFIG_SECTIONS = ("data", "views", "model", "method", "optim", "train", "eval", "monitor", "saliency")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the largest figure inlined into a page
MAX_FIGURE_BYTES = 64 << 20

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

_ABSENT = object()  # a getter's default that a JSON null is not: null where a number belongs is an error
_K_TOPK = re.compile(r"k\d{1,6}_top[15]")
_EVAL_NUMBERS = ("top1", "top5", "clean_top1", "mean_per_class", "mean_corrupted_top1", "l2", "epochs", "num_train")
_EVAL_STRINGS = ("protocol", "dataset", "command", "date", "mode", "head", "source")
_EVAL_NUMBER_MAPS = ("chosen", "ood", "corruptions")


def check_eval(res: Any, path: Any) -> Dict[str, Any]:
    """``res`` (an ``evals/*.json`` read from ``path``) with every field the page uses checked: the accuracies
    (``top1``, ``top5``, ``k<K>_top1/5``, ``clean_top1``, ``mean_per_class``, ``mean_corrupted_top1``) and the other
    numbers are numbers when present, ``labels_fraction`` in [0, 1], ``chosen`` / ``ood`` / ``corruptions`` mappings of
    numbers, ``protocol`` / ``dataset`` / ``command`` / ``date`` ... strings. One DataError line naming the field
    otherwise."""
    f = Fields(res, path, "evaluation result")
    for key in _EVAL_NUMBERS:
        f.number(key, _ABSENT)
    f.number("labels_fraction", _ABSENT, lo=0, hi=1)
    for key in res:
        if _K_TOPK.fullmatch(key):
            f.number(key)
    for key in _EVAL_STRINGS:
        f.string(key, _ABSENT)
    for key in _EVAL_NUMBER_MAPS:
        sub = f.mapping(key, _ABSENT)
        if sub is not _ABSENT:
            for k in sub.obj:
                sub.number(k)
    return res


def _config_info(config: Dict[str, Any], path: Path) -> Dict[str, Any]:
    """The fields of a run's config the page shows, type-checked (null counts as absent)."""
    f = Fields(config, path, "run config")

    def section(name: str) -> Optional[Fields]:
        return f.mapping(name, None)

    method, model, data, train = section("method"), section("model"), section("data"), section("train")
    return {"name": f.string("name", None),
            "method": method.string("name", None) if method else None,
            "backbone": model.string("backbone", None) if model else None,
            "dataset": data.string("dataset", None) if data else None,
            "batch": train.integer("batch_size", None, lo=1) if train else None}


def _present(path: Path) -> bool:
    return os.path.lexists(path)


def _rel(path: Path, run_dir: Path) -> str:
    try:
        return Path(path).relative_to(run_dir).as_posix()
    except ValueError:
        return str(path)


def _reason(exc: BaseException, path: Path) -> str:
    """The one-line reason of ``exc``, without the file name the left-out list already shows."""
    msg = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
    for prefix in (f"{path}: ", f"{path} "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _check_run_dir(run_dir: Path) -> Path:
    """A run folder holds config.yaml or train_log.csv (damaged or not); anything else is one error line."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run folder")
    if not _present(run_dir / "config.yaml") and not _present(run_dir / "train_log.csv"):
        raise ConfigError(f"{run_dir} holds neither config.yaml nor train_log.csv: not a selfsup run folder")
    return run_dir


def _listing(folder: Path, pattern: str, run_dir: Path, leave_out) -> List[Path]:
    if not _present(folder):
        return []
    try:
        if not folder.is_dir():
            raise DataError(f"{folder}: is not a folder")
        return sorted(folder.glob(pattern))
    except (OSError, SelfsupError) as exc:
        leave_out(folder, exc)
        return []


def _read_figure(path: Path) -> bytes:
    """The bytes of a PNG figure (a regular file, a PNG, at most MAX_FIGURE_BYTES)."""
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file")
    if path.stat().st_size > MAX_FIGURE_BYTES:
        raise DataError(f"{path}: is larger than {MAX_FIGURE_BYTES >> 20} MB")
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise DataError(f"{path}: is not a PNG image")
    return data


def _last(rows: List[Dict[str, str]], key: str) -> Optional[float]:
    for r in reversed(rows):
        if r.get(key) not in ("", None):
            return float(r[key])
    return None


def read_run(run_dir: Path) -> Dict[str, Any]:
    """Everything a report shows, read from a run folder. A missing piece is simply absent; a damaged one is absent
    too and listed in ``left_out`` (``(file relative to the run folder, one-line reason)``). A folder that is not a
    run folder is a ConfigError."""
    from selfsup.eval.plots import read_train_log_rows

    run_dir = _check_run_dir(run_dir)
    left_out: List[Tuple[str, str]] = []

    def leave_out(path: Path, exc: BaseException) -> None:
        left_out.append((_rel(path, run_dir), _reason(exc, path)))

    cfg_path = run_dir / "config.yaml"
    config: Dict[str, Any] = {}
    config_text = ""
    info: Dict[str, Any] = {}
    if _present(cfg_path):
        try:
            config = read_yaml_mapping(cfg_path, "run config", sections=CONFIG_SECTIONS)
            info = _config_info(config, cfg_path)
            config_text = cfg_path.read_text(encoding="utf-8")
        except (SelfsupError, OSError, UnicodeDecodeError) as exc:
            leave_out(cfg_path, exc)
            config, config_text, info = {}, "", {}
    rows: List[Dict[str, str]] = []
    log_path = run_dir / "train_log.csv"
    if _present(log_path):
        try:
            rows = read_train_log_rows(log_path)
        except (SelfsupError, OSError) as exc:
            leave_out(log_path, exc)
    evals = []
    for p in _listing(run_dir / "evals", "*.json", run_dir, leave_out):
        try:
            evals.append((p.stem, check_eval(read_json(p, "evaluation result"), p)))
        except (SelfsupError, OSError) as exc:
            leave_out(p, exc)
    figures: List[Tuple[str, Path, bytes]] = []
    candidates = [("pretraining curves", run_dir / "curves.png")] if _present(run_dir / "curves.png") else []
    candidates += [(p.stem.replace("_", " "), p)
                   for p in _listing(run_dir / "analysis", "*.png", run_dir, leave_out)]
    for caption, p in candidates:
        try:
            figures.append((caption, p, _read_figure(p)))
        except (SelfsupError, OSError) as exc:
            leave_out(p, exc)
    batch = info.get("batch")
    step = int(float(rows[-1]["step"])) + 1 if rows else None
    summary = {
        "run": run_dir.name or run_dir.resolve().name or str(run_dir),
        "method": info.get("method"), "backbone": info.get("backbone"), "dataset": info.get("dataset"),
        "steps": step, "images seen": step * batch if step and batch else None, "batch": batch,
        "training minutes": round(_last(rows, "time_s") / 60, 1) if _last(rows, "time_s") else None,
        "images/s": round(_last(rows, "images_per_s"), 1) if _last(rows, "images_per_s") else None,
        "final loss": round(_last(rows, "loss"), 4) if _last(rows, "loss") is not None else None,
        "monitor kNN top-1": _last(rows, "knn_top1"), "monitor online linear top-1": _last(rows, "online_test_top1"),
    }
    return {"dir": run_dir, "name": info.get("name") or run_dir.name, "config_text": config_text, "config": config,
            "summary": summary, "evals": evals, "figures": figures, "rows": rows, "left_out": left_out}


def eval_row(name: str, res: Dict[str, Any]) -> Dict[str, Any]:
    """One table row of an evaluation: its headline top-1 (and top-5) and what else defines it (``res`` is checked
    by :func:`check_eval` first; the protocol's :meth:`~selfsup.eval.protocols.Protocol.report_row` says what
    defines it)."""
    check_eval(res, name)
    proto = res.get("protocol", name.split("_")[0])
    row = {"top1": res.get("top1", res.get("k20_top1", res.get("clean_top1"))),
           "top5": res.get("top5", res.get("k20_top5")), "detail": []}
    protocol = protocol_for_result(proto)
    if protocol is not None:
        row.update(protocol.report_row(res))
    return {"name": name, "protocol": proto, "dataset": res.get("dataset"), "top1": row["top1"], "top5": row["top5"],
            "detail": "; ".join(d for d in row["detail"] if d), "command": res.get("command", ""),
            "date": res.get("date", "")}


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]"}
_MD_SPECIAL = re.compile("[" + re.escape("".join(_MD_ESCAPES)) + "]")


def md_escape(v: Any) -> str:
    """``v`` as inline Markdown text that renders as itself: on one line, with no HTML (``<``, ``>``, ``&`` as
    entities), no code span, link or table-cell break (backtick, brackets, pipe and backslash escaped)."""
    text = " ".join(_fmt(v).splitlines())
    return _MD_SPECIAL.sub(lambda m: _MD_ESCAPES[m.group(0)], text)


def md_fenced(text: str, info: str = "") -> List[str]:
    """``text`` in a fenced code block whose fence is longer than any backtick run in it, so nothing inside can
    close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip(), fence]


def _md_row(cells: Sequence[Any]) -> str:
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def _img(data: bytes, alt: str) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}">'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


LEFT_OUT_NOTE = "These parts of the run could not be read; they are left out of this page:"


def _left_out_html(items: Sequence[Tuple[str, ...]]) -> List[str]:
    if not items:
        return []
    lis = ["<li>" + ": ".join(f"<code>{html.escape(p)}</code>" for p in item[:-1]) + f": {html.escape(item[-1])}</li>"
           for item in items]
    return ["<h2>Left out</h2>", f"<p>{LEFT_OUT_NOTE}</p>", "<ul class=\"left-out\">", *lis, "</ul>"]


def _left_out_md(items: Sequence[Tuple[str, ...]]) -> List[str]:
    if not items:
        return []
    return ["", "## Left out", "", LEFT_OUT_NOTE, ""] + ["- " + ": ".join(md_escape(p) for p in item) for item in items]


def _robustness_blocks(evals: List[Tuple[str, Dict[str, Any]]]) -> List[Tuple[str, List[str], List[Any]]]:
    """``(name, header, values)`` of each robustness evaluation: clean, each corruption in RELICv2 Table 9's order
    (its short names), mean."""
    from selfsup.eval.robustness import CORRUPTIONS, robustness_table

    blocks = []
    for name, res in evals:
        corr = res.get("corruptions")
        if res.get("protocol") != "robustness" or not corr:
            continue
        names = [c for c in CORRUPTIONS if c in corr] + [c for c in corr if c not in CORRUPTIONS]
        known = [c for c in names if c in CORRUPTIONS]
        short: Dict[str, str] = {}
        if known:  # the short names robustness_table gives the known corruptions
            head = robustness_table({"clean_top1": 0.0, "corruptions": {c: 0.0 for c in known}})[0]
            short = dict(zip(known, [c.strip() for c in head.strip().strip("|").split("|")][1:-1]))
        blocks.append((name, ["clean"] + [short.get(c, c) for c in names] + ["mean"],
                       [res.get("clean_top1")] + [corr[c] for c in names] + [res.get("mean_corrupted_top1")]))
    return blocks


def _page(title: str, body: List[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html.escape(title)
            + f"</title><style>{CSS}</style></head><body>" + "\n".join(body) + f"<script>{SCRIPT}</script>"
            + "</body></html>\n")


def render_run_html(run: Dict[str, Any]) -> str:
    s = run["summary"]
    body = [f"<h1>{html.escape(str(s['run']))}</h1>",
            f"<p class=\"muted\">selfsup report, {time.strftime('%Y-%m-%d %H:%M')}, {html.escape(str(run['dir']))}</p>"]
    body += _left_out_html(run.get("left_out", []))
    body += ["<h2>Run</h2>", _table(["", "value"], [(k, v) for k, v in s.items() if k != "run"], numeric=[1])]
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
    for name, head, vals in _robustness_blocks(run["evals"]):
        body.append(f"<h2>Robustness: {html.escape(name)}</h2>")
        body.append(_table(head, [vals], numeric=list(range(len(head)))))
    if run["figures"]:
        body.append("<h2>Figures</h2>")
        for caption, _, data in run["figures"]:
            body.append(f"<figure>{_img(data, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    config = run["config_text"] or ("(config.yaml left out: see above)" if _present(run["dir"] / "config.yaml")
                                    else "(no config.yaml)")
    body += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    return _page(f"selfsup report: {s['run']}", body)


def _md_link(path: Path, out_dir: Path) -> str:
    rel = Path(path).resolve().relative_to(out_dir.resolve()) if _inside(path, out_dir) else Path(path)
    return quote(rel.as_posix(), safe="/")


def render_run_markdown(run: Dict[str, Any], out_dir: Path) -> str:
    s = run["summary"]
    lines = [f"# {md_escape(s['run'])}"] + _left_out_md(run.get("left_out", []))
    lines += ["", "| | |", "|---|---:|"] + [_md_row([k, v]) for k, v in s.items() if k != "run"]
    lines += ["", "## Evaluations", ""]
    if run["evals"]:
        lines += ["| evaluation | dataset | top-1 % | top-5 % | details |", "|---|---|---:|---:|---|"]
        for n, r in run["evals"]:
            e = eval_row(n, r)
            lines.append(_md_row([e["name"], e["dataset"], e["top1"], e["top5"], e["detail"]]))
    else:
        lines.append("No evaluation yet.")
    for name, head, vals in _robustness_blocks(run["evals"]):
        lines += ["", f"## Robustness: {md_escape(name)}", "", _md_row(head), "|" + "---:|" * len(head), _md_row(vals)]
    if run["figures"]:
        lines += ["", "## Figures", ""]
        for caption, path, _ in run["figures"]:
            lines.append(f"![{md_escape(caption)}]({_md_link(path, out_dir)})")
    lines += ["", "## Config", ""]
    if run["config_text"]:
        lines += md_fenced(run["config_text"], "yaml")
    else:
        lines.append("(config.yaml left out: see above)" if _present(run["dir"] / "config.yaml")
                     else "(no config.yaml)")
    return "\n".join(lines + [""])


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------------

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


def _write_text(path: Path, text: str) -> Path:
    tmp = _temp_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    _replace(tmp, path)
    return path


def _write_figure(draw, png: Path) -> Path:
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


def _warn_left_out(items: Sequence[Tuple[str, ...]], what: str) -> None:
    for item in items:
        log.warning("%s: left out %s", what, ": ".join(item))


def write_report(run_dir: Path, out: Optional[Path] = None) -> Tuple[Path, Path]:
    """``report.html`` (self-contained) and ``report.md`` for a run; in the run folder unless ``out`` is given.
    Damaged parts of the run are left out and listed on both pages (and warned about)."""
    run_dir = _check_run_dir(Path(run_dir))
    out = _output_dir(Path(out) if out else None, run_dir)
    run = read_run(run_dir)
    if run["rows"] and not _present(run_dir / "curves.png"):  # a run killed before drawing its curves
        from selfsup.eval.plots import plot_curves

        png = out / "curves.png"
        try:
            _write_figure(lambda tmp: plot_curves(run_dir / "train_log.csv", tmp, rows=run["rows"],
                                                  title=f"{run['name']}: loss"), png)
            run["figures"].insert(0, ("pretraining curves", png, png.read_bytes()))
        except (SelfsupError, ValueError, OSError) as exc:
            run["left_out"].append(("curves.png", f"could not be drawn: {_reason(exc, png)}"))
    html_path, md_path = out / "report.html", out / "report.md"
    _write_text(html_path, render_run_html(run))
    _write_text(md_path, render_run_markdown(run, out))
    _warn_left_out(run["left_out"], "report")
    return html_path, md_path


def write_compare(run_dirs: Sequence[Path], out: Path) -> Tuple[Path, Path]:
    """``compare.html`` and ``compare.md``: the runs' summaries, their evaluations side by side (one row per evaluation
    name, one column per run) and their loss and monitored-kNN curves overlaid. Damaged parts of a run are left out
    and listed (run, file, reason)."""
    if len(run_dirs) < 1:
        raise ConfigError("compare needs at least one run folder")
    run_dirs = [_check_run_dir(Path(d)) for d in run_dirs]
    out = make_output_dir(out, "--out")
    runs = [read_run(d) for d in run_dirs]
    names: List[str] = []
    for r in runs:
        n = r["summary"]["run"]
        while n in names:
            n += "'"
        names.append(n)
    left_out = [(name, *item) for name, r in zip(names, runs) for item in r["left_out"]]
    try:
        png = _plot_overlay(runs, names, out / "compare_curves.png")
    except (ValueError, OSError) as exc:  # the page matters more than its figure
        png = None
        left_out.append(("compare", "compare_curves.png", f"could not be drawn: {_reason(exc, out)}"))
    keys = [k for k in runs[0]["summary"] if k != "run"]
    summary_rows = [[k] + [r["summary"].get(k) for r in runs] for k in keys]
    eval_names = sorted({n for r in runs for n, _ in r["evals"]})
    cell = {(i, n): eval_row(n, res) for i, r in enumerate(runs) for n, res in r["evals"]}
    eval_rows = [[n] + [cell[(i, n)]["top1"] if (i, n) in cell else None for i in range(len(runs))]
                 for n in eval_names]
    body = [f"<h1>selfsup compare: {len(runs)} runs</h1>",
            f"<p class=\"muted\">{time.strftime('%Y-%m-%d %H:%M')}</p>"]
    body += _left_out_html(left_out)
    body += ["<h2>Runs</h2>", _table([""] + names, summary_rows, numeric=list(range(1, len(names) + 1))),
             "<h2>Evaluations (top-1 %)</h2>",
             _table(["evaluation"] + names, eval_rows, numeric=list(range(1, len(names) + 1)))
             if eval_rows else "<p>No evaluation in any of the runs.</p>"]
    if png is not None:
        body += ["<h2>Curves</h2>", f"<figure>{_img(png.read_bytes(), 'curves overlaid')}</figure>"]
    html_path, md_path = out / "compare.html", out / "compare.md"
    _write_text(html_path, _page("selfsup compare", body))
    md = ["# selfsup compare"] + _left_out_md(left_out)
    md += ["", _md_row([""] + names), "|---|" + "---:|" * len(names)]
    md += [_md_row(row) for row in summary_rows]
    if eval_rows:
        md += ["", "## Evaluations (top-1 %)", "", _md_row(["evaluation"] + names),
               "|---|" + "---:|" * len(names)] + [_md_row(row) for row in eval_rows]
    if png is not None:
        md += ["", f"![curves]({quote(png.name)})"]
    _write_text(md_path, "\n".join(md) + "\n")
    _warn_left_out(left_out, "compare")
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
    return _write_figure(lambda tmp: save_figure(fig, tmp), png)
