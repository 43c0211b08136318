"""The Markdown page of a run (``report.md``) and the Markdown parts the compare page shares with it.

The Markdown links the PNG files next to it instead of inlining them. Every text that comes from the run is escaped by
:func:`md_escape`, and the config is fenced by a fence longer than any backtick run in it (:func:`md_fenced`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple
from urllib.parse import quote

from selfsup.eval.report_run import LEFT_OUT_NOTE, eval_row, fmt, present, robustness_blocks

_MD_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "`": "\\`", "|": "\\|", "[": "\\[", "]": "\\]"}
_MD_SPECIAL = re.compile("[" + re.escape("".join(_MD_ESCAPES)) + "]")


def md_escape(v: Any) -> str:
    """``v`` as inline Markdown text that renders as itself: on one line, with no HTML (``<``, ``>``, ``&`` as
    entities), no code span, link or table-cell break (backtick, brackets, pipe and backslash escaped)."""
    text = " ".join(fmt(v).splitlines())
    return _MD_SPECIAL.sub(lambda m: _MD_ESCAPES[m.group(0)], text)


def md_fenced(text: str, info: str = "") -> List[str]:
    """``text`` in a fenced code block whose fence is longer than any backtick run in it, so nothing inside can
    close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + info, text.rstrip(), fence]


def md_row(cells: Sequence[Any]) -> str:
    """A table row, every cell escaped."""
    return "| " + " | ".join(md_escape(c) for c in cells) + " |"


def left_out_md(items: Sequence[Tuple[str, ...]]) -> List[str]:
    """The "Left out" section: each item's path(s) and reason on a list line."""
    if not items:
        return []
    return ["", "## Left out", "", LEFT_OUT_NOTE, ""] + ["- " + ": ".join(md_escape(p) for p in item) for item in items]


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False


def _md_link(path: Path, out_dir: Path) -> str:
    rel = Path(path).resolve().relative_to(out_dir.resolve()) if _inside(path, out_dir) else Path(path)
    return quote(rel.as_posix(), safe="/")


def _evaluations_md(evals: List[Tuple[str, Dict[str, Any]]]) -> List[str]:
    if not evals:
        return ["No evaluation yet."]
    lines = ["| evaluation | dataset | top-1 % | top-5 % | details |", "|---|---|---:|---:|---|"]
    for n, r in evals:
        e = eval_row(n, r)
        lines.append(md_row([e["name"], e["dataset"], e["top1"], e["top5"], e["detail"]]))
    return lines


def render_run_markdown(run: Dict[str, Any], out_dir: Path) -> str:
    """``report.md`` of a run read by :func:`~selfsup.eval.report_run.read_run`, its figure links relative to
    ``out_dir``."""
    s = run["summary"]
    lines = [f"# {md_escape(s['run'])}"] + left_out_md(run.get("left_out", []))
    lines += ["", "| | |", "|---|---:|"] + [md_row([k, v]) for k, v in s.items() if k != "run"]
    lines += ["", "## Evaluations", ""] + _evaluations_md(run["evals"])
    for name, head, vals in robustness_blocks(run["evals"]):
        lines += ["", f"## Robustness: {md_escape(name)}", "", md_row(head), "|" + "---:|" * len(head), md_row(vals)]
    if run["figures"]:
        lines += ["", "## Figures", ""]
        for caption, path, _ in run["figures"]:
            lines.append(f"![{md_escape(caption)}]({_md_link(path, out_dir)})")
    lines += ["", "## Config", ""]
    if run["config_text"]:
        lines += md_fenced(run["config_text"], "yaml")
    else:
        lines.append("(config.yaml left out: see above)" if present(run["dir"] / "config.yaml")
                     else "(no config.yaml)")
    return "\n".join(lines + [""])
