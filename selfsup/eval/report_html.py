"""The HTML page of a run (``report.html``) and the HTML parts the compare page shares with it.

The page is self-contained: figures inlined as data URIs, no scripts or styles fetched, so it can be mailed or
archived. A small inline script marks ``<body data-figures="ok N">`` once every figure has decoded in the browser
(``broken ...`` otherwise), which the browser test reads. Every text that comes from the run is escaped by
:func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import time
from typing import Any, Dict, List, Sequence, Tuple

from selfsup.eval.report_run import LEFT_OUT_NOTE, eval_row, fmt, present, robustness_blocks

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


def html_img(data: bytes, alt: str) -> str:
    """A PNG inlined as a data URI."""
    return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" alt="{html.escape(alt)}">'


def html_table(head: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """A table, every cell escaped; the columns in ``numeric`` right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{html.escape(fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</table>"


def left_out_html(items: Sequence[Tuple[str, ...]]) -> List[str]:
    """The "Left out" section: each item's path(s) as code, then its reason."""
    if not items:
        return []
    lis = ["<li>" + ": ".join(f"<code>{html.escape(p)}</code>" for p in item[:-1]) + f": {html.escape(item[-1])}</li>"
           for item in items]
    return ["<h2>Left out</h2>", f"<p>{LEFT_OUT_NOTE}</p>", "<ul class=\"left-out\">", *lis, "</ul>"]


def html_page(title: str, body: List[str]) -> str:
    """The whole document around ``body``: inline style and the figure-checking script."""
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html.escape(title)
            + f"</title><style>{CSS}</style></head><body>" + "\n".join(body) + f"<script>{SCRIPT}</script>"
            + "</body></html>\n")


def _evaluations_html(evals: List[Tuple[str, Dict[str, Any]]]) -> List[str]:
    """The evaluations' table and the commands that made them (or how to make some)."""
    if not evals:
        return ["<p>No evaluation yet: <code>selfsup eval linear -c RUN</code>, <code>eval knn</code>, "
                "<code>eval finetune</code>, <code>eval transfer</code>, <code>eval robustness</code> keep their "
                "results in <code>RUN/evals/</code>.</p>"]
    rows = [eval_row(n, r) for n, r in evals]
    return [html_table(["evaluation", "dataset", "top-1 %", "top-5 %", "details", "date"],
                       [(r["name"], r["dataset"], r["top1"], r["top5"], r["detail"], r["date"]) for r in rows],
                       numeric=[2, 3]),
            "<details><summary>commands</summary><pre>" + html.escape(
                "\n".join(r["command"] for r in rows if r["command"])) + "</pre></details>"]


def render_run_html(run: Dict[str, Any]) -> str:
    """``report.html`` of a run read by :func:`~selfsup.eval.report_run.read_run`."""
    s = run["summary"]
    body = [f"<h1>{html.escape(str(s['run']))}</h1>",
            f"<p class=\"muted\">selfsup report, {time.strftime('%Y-%m-%d %H:%M')}, {html.escape(str(run['dir']))}</p>"]
    body += left_out_html(run.get("left_out", []))
    body += ["<h2>Run</h2>", html_table(["", "value"], [(k, v) for k, v in s.items() if k != "run"], numeric=[1])]
    body.append("<h2>Evaluations</h2>")
    body += _evaluations_html(run["evals"])
    for name, head, vals in robustness_blocks(run["evals"]):
        body.append(f"<h2>Robustness: {html.escape(name)}</h2>")
        body.append(html_table(head, [vals], numeric=list(range(len(head)))))
    if run["figures"]:
        body.append("<h2>Figures</h2>")
        for caption, _, data in run["figures"]:
            body.append(f"<figure>{html_img(data, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    config = run["config_text"] or ("(config.yaml left out: see above)" if present(run["dir"] / "config.yaml")
                                    else "(no config.yaml)")
    body += ["<h2>Config</h2>", f"<pre>{html.escape(config)}</pre>"]
    return html_page(f"selfsup report: {s['run']}", body)
