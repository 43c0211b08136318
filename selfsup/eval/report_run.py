"""Reading a run folder for :mod:`selfsup.eval.report`: what the pages show, every field type-checked.

Every file is read through :mod:`selfsup.metafiles` and every field the page uses is type-checked. A damaged part (an
eval JSON that is not a mapping or has a string where a number belongs, a binary or non-numeric ``train_log.csv``, a
``config.yaml`` that is not a mapping, a figure that is not a PNG) is left out and listed with its one-line reason. A
folder that is not a run folder at all is one error line. The rows both pages draw from a run (an evaluation's
headline numbers, a robustness table) are made here too, so the HTML and the Markdown pages say the same.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from selfsup.errors import ConfigError, DataError, SelfsupError
from selfsup.eval.protocols import protocol_for_result
from selfsup.metafiles import Fields, read_json, read_yaml_mapping

#: the sections of a run's config.yaml (selfsup.config.Config), each a mapping when present
CONFIG_SECTIONS = ("data", "views", "model", "method", "optim", "train", "eval", "monitor", "saliency")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: the largest figure inlined into a page
MAX_FIGURE_BYTES = 64 << 20
#: the sentence both pages put above the list of the run's parts that were left out
LEFT_OUT_NOTE = "These parts of the run could not be read; they are left out of this page:"

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
        if isinstance(sub, Fields):  # else _ABSENT: the key is not there
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


def present(path: Path) -> bool:
    """``path`` exists, or is a link (a broken one too): a part of the run that is there, readable or not."""
    return os.path.lexists(path)


def _rel(path: Path, run_dir: Path) -> str:
    try:
        return Path(path).relative_to(run_dir).as_posix()
    except ValueError:
        return str(path)


def one_line_reason(exc: BaseException, path: Path) -> str:
    """The one-line reason of ``exc``, without the file name the left-out list already shows."""
    msg = (str(exc).splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
    for prefix in (f"{path}: ", f"{path} "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def check_run_dir(run_dir: Path) -> Path:
    """A run folder holds config.yaml or train_log.csv (damaged or not); anything else is one error line."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is not a run folder")
    if not present(run_dir / "config.yaml") and not present(run_dir / "train_log.csv"):
        raise ConfigError(f"{run_dir} holds neither config.yaml nor train_log.csv: not a selfsup run folder")
    return run_dir


def _listing(folder: Path, pattern: str, run_dir: Path, leave_out) -> List[Path]:
    if not present(folder):
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


def _read_config(cfg_path: Path, leave_out) -> Tuple[Dict[str, Any], str, Dict[str, Any]]:
    """``(config, its text, the fields the page shows)`` of a run's config.yaml; empty when absent or left out."""
    if not present(cfg_path):
        return {}, "", {}
    try:
        config = read_yaml_mapping(cfg_path, "run config", sections=CONFIG_SECTIONS)
        info = _config_info(config, cfg_path)
        return config, cfg_path.read_text(encoding="utf-8"), info
    except (SelfsupError, OSError, UnicodeDecodeError) as exc:
        leave_out(cfg_path, exc)
        return {}, "", {}


def _read_figures(run_dir: Path, leave_out) -> List[Tuple[str, Path, bytes]]:
    """``(caption, path, PNG bytes)`` of ``curves.png`` and ``analysis/*.png``."""
    figures: List[Tuple[str, Path, bytes]] = []
    candidates = [("pretraining curves", run_dir / "curves.png")] if present(run_dir / "curves.png") else []
    candidates += [(p.stem.replace("_", " "), p)
                   for p in _listing(run_dir / "analysis", "*.png", run_dir, leave_out)]
    for caption, p in candidates:
        try:
            figures.append((caption, p, _read_figure(p)))
        except (SelfsupError, OSError) as exc:
            leave_out(p, exc)
    return figures


def _summary(run_dir: Path, info: Dict[str, Any], rows: List[Dict[str, str]]) -> Dict[str, Any]:
    """The run's table: what it is (method, backbone, dataset) and how its pretraining went (from the log's rows)."""
    batch = info.get("batch")
    step = int(float(rows[-1]["step"])) + 1 if rows else None
    time_s, images_per_s, loss = _last(rows, "time_s"), _last(rows, "images_per_s"), _last(rows, "loss")
    return {
        "run": run_dir.name or run_dir.resolve().name or str(run_dir),
        "method": info.get("method"), "backbone": info.get("backbone"), "dataset": info.get("dataset"),
        "steps": step, "images seen": step * batch if step and batch else None, "batch": batch,
        "training minutes": round(time_s / 60, 1) if time_s else None,
        "images/s": round(images_per_s, 1) if images_per_s else None,
        "final loss": round(loss, 4) if loss is not None else None,
        "monitor kNN top-1": _last(rows, "knn_top1"), "monitor online linear top-1": _last(rows, "online_test_top1"),
    }


def read_run(run_dir: Path) -> Dict[str, Any]:
    """Everything a report shows, read from a run folder. A missing piece is simply absent; a damaged one is absent
    too and listed in ``left_out`` (``(file relative to the run folder, one-line reason)``). A folder that is not a
    run folder is a ConfigError."""
    from selfsup.eval.plots import read_train_log_rows

    run_dir = check_run_dir(run_dir)
    left_out: List[Tuple[str, str]] = []

    def leave_out(path: Path, exc: BaseException) -> None:
        left_out.append((_rel(path, run_dir), one_line_reason(exc, path)))

    config, config_text, info = _read_config(run_dir / "config.yaml", leave_out)
    rows: List[Dict[str, str]] = []
    log_path = run_dir / "train_log.csv"
    if present(log_path):
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
    figures = _read_figures(run_dir, leave_out)
    return {"dir": run_dir, "name": info.get("name") or run_dir.name, "config_text": config_text, "config": config,
            "summary": _summary(run_dir, info, rows), "evals": evals, "figures": figures, "rows": rows,
            "left_out": left_out}


def eval_row(name: str, res: Dict[str, Any]) -> Dict[str, Any]:
    """One table row of an evaluation: its headline top-1 (and top-5) and what else defines it (``res`` is checked
    by :func:`check_eval` first; the protocol's :meth:`~selfsup.eval.protocols.Protocol.report_row` says what
    defines it)."""
    check_eval(res, name)
    proto = res.get("protocol", name.split("_")[0])
    row: Dict[str, Any] = {"top1": res.get("top1", res.get("k20_top1", res.get("clean_top1"))),
           "top5": res.get("top5", res.get("k20_top5")), "detail": []}
    protocol = protocol_for_result(proto)
    if protocol is not None:
        row.update(protocol.report_row(res))
    return {"name": name, "protocol": proto, "dataset": res.get("dataset"), "top1": row["top1"], "top5": row["top5"],
            "detail": "; ".join(d for d in row["detail"] if d), "command": res.get("command", ""),
            "date": res.get("date", "")}


def robustness_blocks(evals: List[Tuple[str, Dict[str, Any]]]) -> List[Tuple[str, List[str], List[Any]]]:
    """``(name, header, values)`` of each robustness evaluation: clean, each corruption in RELICv2 Table 9's order
    (its short names), mean."""
    from selfsup.eval.robustness import CORRUPTIONS, robustness_table

    blocks: List[Tuple[str, List[str], List[Any]]] = []
    for name, res in evals:
        corr = res.get("corruptions")
        if res.get("protocol") != "robustness" or not corr:
            continue
        names: List[str] = [c for c in CORRUPTIONS if c in corr] + [c for c in corr if c not in CORRUPTIONS]
        known = [c for c in names if c in CORRUPTIONS]
        short: Dict[str, str] = {}
        if known:  # the short names robustness_table gives the known corruptions
            head = robustness_table({"clean_top1": 0.0, "corruptions": {c: 0.0 for c in known}})[0]
            short = dict(zip(known, [c.strip() for c in head.strip().strip("|").split("|")][1:-1]))
        header: List[str] = ["clean"] + [short.get(c, c) for c in names] + ["mean"]
        values: List[Any] = [res.get("clean_top1")] + [corr[c] for c in names] + [res.get("mean_corrupted_top1")]
        blocks.append((name, header, values))
    return blocks


def fmt(v: Any) -> str:
    """A table cell's text: ``-`` for nothing, floats with two decimals."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)
