"""The Revisiting study runner (``selfsup study``): pretext tasks x architectures x widths, each cell pretrained,
evaluated the same way, and summarised as the paper does (Table 1, Fig. 4, 5 and 7).

A cell is one pretraining run of the recipe ``<method>_<data>`` (e.g. ``rotation_fmnist``) with ``model.backbone``
set to the architecture and ``model.width = k / 4`` (the paper's widening factor k; k = 4 is the standard network),
``model.stage_units`` set to ``stage_units`` units in every stage when given (the CPU-sized grid; otherwise each
architecture's own depth, whatever the recipe says), and the study's overrides on top (``METHOD:key=value`` applies
to that method's cells only). Then, for the cell:

* **pretext accuracy** on held-out images (:func:`pretext_accuracy`: the method's own step in eval mode on the test
  split, e.g. rotation or permutation top-1, Exemplar's nearest-copy accuracy);
* **probes at every tap** (:func:`selfsup.eval.taps.run_taps`, ``eval.taps.*``: L-BFGS, and optionally MLP and SGD,
  at the label fractions asked for).

With ``baselines`` the same probes run on the random-init network of every (architecture, width), the row a cell has
to beat. Cells live in ``<out>/cells/<method>_<arch>_k<k>/``: the run folder, and ``cell.json`` once its evaluation is
done (its numbers and the cell's resolved config). Finished cells are skipped when the study is run again, if their
config is the one this invocation would use (keys that only steer logging, progress, checkpoint cadence or devices
aside: :data:`STUDY_FREE_KEYS`); a finished cell of other settings, a damaged ``cell.json`` or one without its config
is refused in one line before anything runs (``--report-only`` too: a table of cells of other settings is wrong). A
cell whose pretraining was interrupted resumes from its ``last.ckpt`` (the trainer's exact resume, which refuses a
changed config). The grid's progress bar counts cells, with an ETA.

Every method, architecture and width is checked before any cell runs: the methods must be pretext tasks with a pretext
accuracy (:data:`PRETEXT_METHODS`), and each (architecture, width) is built on the meta device.

Outputs in ``<out>``: ``study.json`` (every number), ``table.md`` and ``table.csv`` (Table 1: pre-logits L-BFGS top-1
of every method x architecture x width, the best per column in bold), ``heatmap.png``, ``pretext_vs_downstream.png``
(Fig. 4), ``depth.png`` (Fig. 5: accuracy at every tap, one panel per architecture), ``width.png`` (Fig. 7: accuracy
against k, one line per method and label fraction).

Scale: each cell's pretraining is an ordinary :func:`selfsup.engine.trainer.pretrain`, so ``train.devices``,
``train.num_nodes`` and ``train.strategy`` overrides make every cell a DDP run on GPUs; cells run one after another.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm.auto import tqdm

from selfsup.config import Config, find_recipe, list_recipes, load_config, to_dict
from selfsup.data.base import collate
from selfsup.data.datasets import build_dataset
from selfsup.data.views import MultiViewSampler
from selfsup.engine.devices import device_for
from selfsup.engine.resume import RESUME_FREE_KEYS, _flatten
from selfsup.engine.seeds import generator_for
from selfsup.engine.trainer import pretrain
from selfsup.errors import ConfigError, DataError
from selfsup.eval.run import load_backbone, load_method, write_json
from selfsup.eval.taps import run_taps
from selfsup.fileio import atomic_write_bytes
from selfsup.metafiles import Fields, make_output_dir, read_json
from selfsup.methods.base import StepContext

log = logging.getLogger("selfsup.study")

__all__ = ["Cell", "study_cells", "check_grid", "pretext_accuracy", "read_cell", "config_changes", "run_study",
           "write_outputs", "PRETEXT_METHODS", "STUDY_FREE_KEYS"]

#: the methods a study runs: pretext tasks whose step logs a pretext accuracy (``pretext_top1``)
PRETEXT_METHODS = ("rotation", "exemplar", "jigsaw", "relpatch")
#: config keys a finished cell may differ in from this invocation's (the trainer's resume-free keys, except the
#: evaluation settings, which make the cell's numbers)
STUDY_FREE_KEYS = tuple(k for k in RESUME_FREE_KEYS if k != "eval.")


@dataclass(frozen=True)
class Cell:
    method: str  # "random" for a baseline
    arch: str
    k: float

    @property
    def name(self) -> str:
        return f"{self.method}_{self.arch}_k{self.k:g}"


def study_cells(methods: Sequence[str], archs: Sequence[str], widths: Sequence[float],
                baselines: bool = True) -> List[Cell]:
    """The grid in the order it runs: width by width (so that a partial study covers every architecture), for every
    architecture its random-init baseline, then each method."""
    cells = []
    for k in widths:
        for arch in archs:
            if baselines:
                cells.append(Cell("random", arch, k))
            cells += [Cell(m, arch, k) for m in methods]
    return cells


def check_grid(methods: Sequence[str], archs: Sequence[str], widths: Sequence[float]) -> None:
    """One line before anything runs for a method that is not a study pretext task, an unknown architecture, a width
    that is not a positive finite number, or a value listed twice."""
    import math

    from selfsup.models.registry import list_backbones

    for option, values in (("--methods", methods), ("--archs", archs), ("--widths", [f"{k:g}" for k in widths])):
        if not values:
            raise ConfigError(f"{option} needs at least one value")
        twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
        if twice is not None:
            raise ConfigError(f"{option} lists {twice} twice")
    bad = [m for m in methods if m not in PRETEXT_METHODS]
    if bad:
        raise ConfigError(f"--methods {','.join(bad)}: the study runs pretext tasks with a pretext accuracy; "
                          f"allowed: {', '.join(PRETEXT_METHODS)}")
    known = list_backbones()
    bad = [a for a in archs if a not in known]
    if bad:
        raise ConfigError(f"--archs {','.join(bad)}: unknown architecture; allowed: {', '.join(known)}")
    bad_k = [k for k in widths if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k)
             or k <= 0]
    if bad_k:
        raise ConfigError(f"--widths {bad_k[0]}: widening factors must be finite numbers > 0")


def check_networks(cells: Sequence[Cell], configs: Sequence[Config]) -> None:
    """Build every (architecture, width) of the grid on the meta device (no memory, no time): a width or a
    ``--stage-units`` an architecture refuses is one line naming ``--archs`` and ``--widths`` before any cell runs."""
    from selfsup.methods.base import backbone_input_size
    from selfsup.models.registry import create_backbone

    seen = set()
    for cell, cfg in zip(cells, configs):
        key = (cell.arch, cell.k, cfg.method.name)
        if key in seen:
            continue
        seen.add(key)
        try:
            create_backbone(cfg.model, backbone_input_size(cfg), device="meta")
        except ConfigError as exc:
            raise ConfigError(f"--archs {cell.arch} --widths {cell.k:g} (cell {cell.name}): {exc}") from None


def cell_config(cell: Cell, data: str, stage_units: Optional[int], overrides: Sequence[str], out: Path,
                methods: Sequence[str]) -> Config:
    """The config of ``cell``: recipe ``<method>_<data>`` (a baseline takes the first method's), its architecture and
    width, and the study's overrides."""
    method = cell.method if cell.method != "random" else methods[0]
    recipe = f"{method}_{data}"
    try:
        find_recipe(recipe)
    except ConfigError:
        have = sorted(r for r in list_recipes() if r.endswith(f"_{data}"))
        raise ConfigError(f"selfsup study: no recipe '{recipe}' for --methods {method} --data {data} "
                          f"(recipes for {data}: {', '.join(have) or 'none'})") from None
    units = ["model.stage_units=null"]  # the architecture's own depth, whatever the recipe says
    if stage_units is not None:
        n = 5 if cell.arch.startswith("vgg") else 4
        units = [f"model.stage_units=[{','.join([str(stage_units)] * n)}]"]
    return load_config(recipe, [f"model.backbone={cell.arch}", f"model.width={cell.k / 4:g}", *units,
                                *overrides_for(method, overrides), f"out={out / 'cells' / cell.name}",
                                "train.progress=false"])


def overrides_for(method: str, overrides: Sequence[str]) -> List[str]:
    """The study's overrides that apply to ``method``'s cells: plain ``key=value`` ones, and ``METHOD:key=value`` ones
    whose METHOD is ``method`` (e.g. ``jigsaw:method.patch_size=8``), without the prefix."""
    chosen = []
    for item in overrides:
        key = item.split("=", 1)[0]
        if ":" in key:
            scope, _, rest = item.partition(":")
            if scope == method:
                chosen.append(rest)
        else:
            chosen.append(item)
    return chosen


@torch.no_grad()
def pretext_accuracy(cfg: Config, checkpoint: Optional[str], limit: int = 2000) -> float:
    """The pretext task's accuracy (the method's ``pretext_top1``) on the first ``limit`` test images, with the
    training views and the method in eval mode (BatchNorm from running statistics, no dropout), seeded."""
    dev = device_for(cfg)
    method = load_method(cfg, checkpoint).to(dev).eval()
    dataset = build_dataset(cfg.data, "test")
    sampler = MultiViewSampler(cfg.views, dataset.mean, dataset.std)
    n = min(limit, len(dataset))
    bs = min(cfg.train.batch_size, 256)
    total, correct = 0, 0.0
    for step, start in enumerate(range(0, n, bs)):
        batch = collate([dataset[i] for i in range(start, min(start + bs, n))])
        images = batch["image"].to(dev)
        masks = batch["mask"].to(dev) if batch.get("mask") is not None else None
        views = sampler(images, masks, sampler.sample_params(images.shape[0], generator_for(cfg.seed, "pretext", step)))
        ctx = StepContext(step=0, total_steps=1, epoch=0, generator=generator_for(cfg.seed, "pretext-method", step))
        out = method(views, ctx)
        if "pretext_top1" not in out.logs:
            raise ConfigError(f"method {cfg.method.name} has no pretext accuracy (not a pretext task)")
        correct += out.logs["pretext_top1"] * images.shape[0]
        total += images.shape[0]
    return correct / max(total, 1)


def run_cell(cell: Cell, cfg: Config, progress: bool) -> dict:
    """Pretrain (resuming an interrupted run) and evaluate one cell; a baseline only evaluates."""
    out = Path(cfg.out)
    t0 = time.time()
    result: dict = {"method": cell.method, "arch": cell.arch, "k": cell.k, "width": cfg.model.width}
    checkpoint: Optional[str] = None
    if cell.method != "random":
        run = pretrain(cfg, resume="auto" if (out / "last.ckpt").exists() else None)
        checkpoint = str(out)
        result.update(steps=run.step, images_per_s=run.images_per_s, pretrain_s=run.elapsed_s)
        result["pretext_top1"] = pretext_accuracy(cfg, checkpoint)
    else:
        out.mkdir(parents=True, exist_ok=True)
    rep = load_backbone(cfg, checkpoint)
    result["parameters"] = sum(p.numel() for p in rep.parameters())
    taps = run_taps(cfg, rep, progress=progress)
    result.update(taps=taps["taps"], dims=taps["dims"], results=taps["results"], num_train=taps["num_train"])
    result["seconds"] = time.time() - t0
    result["config"] = to_dict(cfg)  # what a later invocation compares its own config with (read_cell)
    # atomically: a kill while writing leaves no half cell.json (which a rerun would refuse), only an unfinished cell
    atomic_write_bytes(out / "cell.json", (json.dumps(result, indent=2, sort_keys=True) + "\n").encode())
    return result


def read_cell(path: Path, cell: Cell) -> dict:
    """The finished cell's ``cell.json``, checked: the fields :func:`write_outputs` reads, of the right types, for
    this ``cell``, and its stored config. One line naming the file (and the field) otherwise."""
    what = "study cell result"
    data = read_json(path, what)
    f = Fields(data, path, what)
    method, arch, k = f.string("method"), f.string("arch"), f.number("k", lo=0)
    if (method, arch, float(k)) != (cell.method, cell.arch, float(cell.k)):
        raise DataError(f"{path}: fields method/arch/k are {method}/{arch}/{k:g}, not those of cell {cell.name}")
    f.number("width", None, lo=0)
    f.list("taps", of=str)
    results = f.mapping("results")
    for probe in results.obj:
        fractions = results.mapping(probe)
        for frac in fractions.obj:
            try:
                float(frac)
            except ValueError:
                raise fractions.error(frac, "is not a label fraction (a number)") from None
            accs = fractions.mapping(frac)
            for tap in accs.obj:
                accs.number(tap, lo=0, hi=100, allow_none=True)
    f.number("pretext_top1", None, lo=0, hi=100, allow_none=True)
    if not f.has("config"):
        raise ConfigError(f"{path}: made by an older selfsup without its config; rerun the study in a new --out")
    f.mapping("config")
    return data


def config_changes(old: dict, cfg: Config, free: Sequence[str] = STUDY_FREE_KEYS) -> List[Tuple[str, Any, Any]]:
    """``(key, old value, new value)`` of every flattened key (outside ``free``) whose value differs between the
    stored config ``old`` and ``cfg``. As the trainer's resume check: a key ``old`` lacks (an option added to selfsup
    later) counts as its default."""
    new = _flatten(to_dict(cfg))
    old = _flatten(old)
    defaults = _flatten(to_dict(load_config(None, [f"method.name={cfg.method.name}"])))
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
    return [(k, old.get(k, "<unset>"), new.get(k, "<unset>")) for k in sorted(set(old) | set(new))
            if old.get(k, "<unset>") != new.get(k, "<unset>")
            and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in free)]


def finished_cell(cell: Cell, cfg: Config) -> Optional[dict]:
    """The result of ``cell`` if it is finished (its ``cell.json`` exists) with the settings of ``cfg``; ``None`` if it
    is not finished. A damaged ``cell.json``, or one finished with other settings, is one line."""
    path = Path(cfg.out) / "cell.json"
    if not (path.exists() or path.is_symlink()):
        return None
    result = read_cell(path, cell)
    changed = config_changes(result["config"], cfg)
    if changed:
        shown = ", ".join(f"{k} ({old!r} -> {new!r})" for k, old, new in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        raise ConfigError(f"cell {cell.name} ({path}) was finished with other settings: {shown}{more}; give another "
                          f"--out for the new settings, or rerun with the old ones")
    return result


def run_study(methods: Sequence[str], archs: Sequence[str], widths: Sequence[float], data: str, out: Path,
              overrides: Sequence[str] = (), stage_units: Optional[int] = None, baselines: bool = True,
              progress: bool = True, run: bool = True) -> List[dict]:
    """Run (or finish) the grid and write its outputs; returns every cell's result. ``run=False`` runs nothing: the
    outputs are written from the cells already finished (a partial grid leaves its cells blank). Bad methods,
    architectures or widths, an ``out`` that cannot be a folder, and finished cells of other settings or damaged are
    refused in one line before anything runs."""
    out = Path(out)
    methods, archs, widths = list(methods), list(archs), [float(k) for k in widths]
    check_grid(methods, archs, widths)
    cells = study_cells(methods, archs, widths, baselines)
    configs = [cell_config(c, data, stage_units, overrides, out, methods) for c in cells]  # all errors up front
    check_networks(cells, configs)
    make_output_dir(out, "--out")
    finished = [finished_cell(c, cfg) for c, cfg in zip(cells, configs)]  # every refusal before any cell runs
    results = []
    bar = tqdm(list(zip(cells, configs, finished)), desc="study", unit="cell", disable=not progress,
               dynamic_ncols=True)
    for cell, cfg, done in bar:
        bar.set_postfix(cell=cell.name)
        if done is not None:
            results.append(done)
            continue
        if not run:
            continue
        results.append(run_cell(cell, cfg, progress=False))
        write_outputs(results, out, methods, archs, widths)
    write_outputs(results, out, methods, archs, widths)
    return results


def _top1(r: dict, probe: str = "lbfgs", fraction: str = "1", tap: str = "pre_logits") -> Optional[float]:
    return r.get("results", {}).get(probe, {}).get(fraction, {}).get(tap)


def write_outputs(results: List[dict], out: Path, methods: Sequence[str], archs: Sequence[str],
                  widths: Sequence[float]) -> Dict[str, Path]:
    """``study.json``, ``table.md``/``table.csv`` and the four figures from the cells done so far."""
    from selfsup.eval import plots

    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study.json", {"methods": list(methods), "archs": list(archs), "widths": list(widths),
                                    "cells": results})
    by = {(r["method"], r["arch"], float(r["k"])): r for r in results}
    rows = [m for m in methods] + (["random"] if any(r["method"] == "random" for r in results) else [])
    columns = [(a, float(k)) for a in archs for k in widths]
    value = {(m, a, k): _top1(by[(m, a, k)]) for m in rows for a, k in columns if (m, a, k) in by}
    best = {}
    for a, k in columns:
        vals = [v for m in methods if (v := value.get((m, a, k))) is not None]
        best[(a, k)] = max(vals) if vals else None
    header = ["method"] + [f"{a} k={k:g}" for a, k in columns]
    md = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(columns)]
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for m in rows:
            cells = []
            for a, k in columns:
                v = value.get((m, a, k))
                text = "" if v is None else f"{v:.2f}"
                cells.append(f"**{text}**" if v is not None and m != "random" and v == best[(a, k)] else text)
            md.append(f"| {m} | " + " | ".join(cells) + " |")
            w.writerow([m] + ["" if value.get((m, a, k)) is None else f"{value[(m, a, k)]:.2f}" for a, k in columns])
    (out / "table.md").write_text(
        "Pre-logits linear probe (L-BFGS, all labels), test top-1 %; best method per column in bold.\n\n"
        + "\n".join(md) + "\n")
    paths = {"table": out / "table.md"}
    grid = [[value.get((m, a, k)) for a, k in columns] for m in rows]
    paths["heatmap"] = plots.plot_heatmap(grid, rows, [f"{a}\nk={k:g}" for a, k in columns], out / "heatmap.png",
                                          title="pre-logits linear top-1 (%)")
    points: Dict[str, List[tuple]] = {}
    for r in results:
        if r["method"] != "random" and r.get("pretext_top1") is not None and _top1(r) is not None:
            points.setdefault(r["arch"], []).append((r["pretext_top1"], _top1(r), f"{r['method']} k={r['k']:g}"))
    paths["pretext"] = plots.plot_scatter_groups(points, out / "pretext_vs_downstream.png",
                                                 xlabel="pretext accuracy, held-out (%)",
                                                 ylabel="pre-logits linear top-1 (%)",
                                                 title="pretext vs downstream accuracy (Revisiting Fig. 4)")
    panels = {}
    for a in archs:  # each architecture at its widest width with results so far
        done = sorted({float(r["k"]) for r in results if r["arch"] == a and r.get("results", {}).get("lbfgs")})
        if not done:
            continue
        k = done[-1]
        lines = {m: by[(m, a, k)]["results"]["lbfgs"]["1"] for m in rows
                 if (m, a, k) in by and "1" in by[(m, a, k)]["results"].get("lbfgs", {})}
        taps = next(by[(m, a, k)]["taps"] for m in rows if (m, a, k) in by)
        panels[f"{a} k={k:g}"] = (taps, lines)
    paths["depth"] = plots.plot_depth_panels(panels, out / "depth.png",
                                             title="linear top-1 at every depth (Revisiting Fig. 5)")
    width_lines: Dict[str, Dict[float, float]] = {}
    styles: Dict[str, dict] = {}  # colour = method, marker and dash = architecture
    markers, dashes = "osD^v*", ["-", "--", ":", "-."]
    for r in results:
        for frac, accs in r.get("results", {}).get("lbfgs", {}).items():
            if accs.get("pre_logits") is not None:
                label = f"{r['method']} / {r['arch']}" + ("" if frac == "1" else f", {float(frac):.0%} labels")
                width_lines.setdefault(label, {})[float(r["k"])] = accs["pre_logits"]
                mi = rows.index(r["method"]) if r["method"] in rows else len(rows)
                ai = list(archs).index(r["arch"]) if r["arch"] in archs else len(archs)
                styles[label] = {"color": f"C{mi % 10}", "marker": markers[ai % len(markers)],
                                 "linestyle": dashes[ai % len(dashes)]}
    paths["width"] = plots.plot_lines(width_lines, out / "width.png", xlabel="widening factor k",
                                      ylabel="pre-logits linear top-1 (%)",
                                      title="accuracy against width (Revisiting Fig. 7)", styles=styles)
    return paths
