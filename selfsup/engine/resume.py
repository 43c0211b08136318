"""Resuming a run: finding its checkpoint, refusing what would not continue it exactly, and loading it.

**Resume means continue exactly.** The checkpoint's config is compared with the run's, key by key; any difference in
what shapes training (method, model, optimiser, views, data, batch, seed, schedule) is refused with one line naming
the keys, unless ``allow_changes`` (CLI ``--allow-changes``). Keys that only steer logging, checkpoints, devices and
evaluation (:data:`RESUME_FREE_KEYS`) may change freely. A checkpoint whose tensors or optimiser state do not fit the
model (another architecture, other widths, another optimiser) is refused in one line, even with ``--allow-changes``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from selfsup.config import Config, load_config, to_dict
from selfsup.engine.checkpoint import load_checkpoint, optimizer_problem
from selfsup.engine.monitor import QualityMonitor
from selfsup.engine.skips import SkippedImages
from selfsup.errors import CheckpointError

log = logging.getLogger("selfsup.engine")

__all__ = ["RESUME_FREE_KEYS", "Resumed", "resume_run"]

RESUME_FREE_KEYS = ("out", "name", "train.progress", "train.max_time_s", "train.log_every_steps",
                    "train.ckpt_every_steps", "train.ckpt_every_minutes", "train.threads", "train.snapshot_minutes",
                    "train.snapshot_every_steps",
                    "train.accelerator", "train.devices", "train.num_nodes", "train.strategy", "train.compile",
                    "data.workers", "data.root", "data.test_root", "data.skip_corrupt", "eval.", "monitor.")


@dataclass
class Resumed:
    """Where a resumed run continues: the checkpoint read, its step, its training time and its skipped images, and
    the quality monitor (restored, or rebuilt when its saved state does not fit)."""

    path: Path
    step: int
    trained_s: float
    skips: SkippedImages
    monitor: Optional[QualityMonitor]


def resume_run(resume: str, cfg: Config, out_dir: Path, method: nn.Module, optimizer,
               monitor: Optional[QualityMonitor], rebuild_monitor: Callable[[], Optional[QualityMonitor]], *,
               allow_changes: bool, is_main: bool) -> Optional[Resumed]:
    """Load the checkpoint that ``resume`` names into ``method``, ``optimizer`` and ``monitor``: a checkpoint path, a
    run folder, or "auto" (``<out_dir>/last.ckpt``; None, said once, when it does not exist: the run starts at 0)."""
    path = out_dir / "last.ckpt" if resume == "auto" else Path(resume)
    if path.is_dir():
        path = path / "last.ckpt"
    if resume == "auto" and not path.exists():
        if is_main:
            log.warning("nothing to resume: %s does not exist; starting at step 0", path)
        return None
    state = load_checkpoint(path)
    changed = _check_compatible(state, cfg, path, allow_changes)
    _load_state(method, optimizer, state, path, changed, cfg.optim.name)
    if monitor is not None and "monitor" in state:
        try:
            monitor.load_state_dict(state["monitor"])
        except Exception:  # noqa: BLE001 - a state that does not fit (or is damaged) is dropped, whole
            log.warning("the monitor's saved state does not fit its new settings; it starts afresh")
            monitor = rebuild_monitor()
    resumed = Resumed(path=path, step=int(state["step"]), trained_s=float(state.get("trained_s", 0.0)),
                      skips=SkippedImages.from_checkpoint(state), monitor=monitor)
    if is_main:
        log.info("resumed from %s at step %d", path, resumed.step)
    return resumed


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_compatible(state: dict, cfg: Config, path: Path, allow_changes: bool) -> List[str]:
    """The keys (outside :data:`RESUME_FREE_KEYS`) whose value differs between the checkpoint's config and ``cfg``;
    any such key is a one-line :class:`CheckpointError` unless ``allow_changes``.

    A key the checkpoint's config lacks (an option added to selfsup after the checkpoint was written) counts as its
    default: new options default to the behaviour before them, so a run continued at the default is unchanged."""
    old, new = _flatten(state["config"]), _flatten(to_dict(cfg))  # a dict: load_checkpoint checked the structure
    defaults = _flatten(to_dict(load_config(None, [f"method.name={cfg.method.name}"])))
    old = {**{k: v for k, v in defaults.items() if k not in old}, **old}
    changed = [k for k in sorted(set(old) | set(new))
               if old.get(k, "<unset>") != new.get(k, "<unset>")
               and not any(k == f or (f.endswith(".") and k.startswith(f)) for f in RESUME_FREE_KEYS)]
    if changed and not allow_changes:
        shown = ", ".join(f"{k} ({old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise CheckpointError(f"{path}: the config differs from the checkpoint's in {shown}{more}; resume with the "
                              f"same values, start a new run (out=...), or pass --allow-changes")
    if changed:
        log.warning("resuming %s with changed %s (--allow-changes)", path, ", ".join(changed))
    return changed


def _load_state(method: nn.Module, optimizer, state: dict, path: Path, changed: List[str], optim_name: str) -> None:
    """Load the method and optimiser state; a structure that does not fit is a one-line error naming the file and the
    first tensors or fields that differ. The optimiser's settings (momentum, betas, ...) stay those of the current
    config, as its learning rate and weight decay do: ``load_state_dict`` would bring back the checkpoint's, and a
    change allowed by ``--allow-changes`` would silently not happen."""
    why = f" (changed: {', '.join(changed)})" if changed else ""
    head = f"cannot resume from {path}{why}"
    never = "so it cannot be resumed, even with --allow-changes; start a new run (out=...)"
    problem = _model_misfit(method, state["method"])
    if problem is None:
        saved_optim = state["config"].get("optim")
        saved_name = saved_optim.get("name") if isinstance(saved_optim, dict) else None
        problem = (optimizer_problem(state["optimizer"])
                   or _optimizer_misfit(optimizer, state["optimizer"], saved_name, optim_name))
    if problem:
        raise CheckpointError(f"{head}: {problem}, {never}")
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
    except KeyError as exc:
        raise CheckpointError(f"{head}: the field {exc.args[0]!r} is missing from its optimiser state, "
                              f"{never}") from None
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{head}: {first[:200]}") from None
    for group, settings in zip(optimizer.param_groups, fresh):
        group.update(settings)


def _model_misfit(method: nn.Module, saved: dict) -> Optional[str]:
    """Why the checkpoint's method tensors do not fit ``method`` (None if they fit): tensors missing or extra (another
    architecture, e.g. model.backbone), or of other shapes (e.g. method.projector_dim or model.width)."""
    now = method.state_dict()
    missing = [k for k in now if k not in saved]
    extra = [k for k in saved if k not in now]
    if missing or extra:
        parts = ([f"{len(missing)} of the model's tensors are missing from it ({', '.join(missing[:3])}"
                  f"{', ...' if len(missing) > 3 else ''})"] if missing else []) + \
                ([f"it holds {len(extra)} tensors the model does not have ({', '.join(extra[:3])}"
                  f"{', ...' if len(extra) > 3 else ''})"] if extra else [])
        return "; ".join(parts)
    differ = [(k, tuple(saved[k].shape), tuple(v.shape)) for k, v in now.items()
              if tuple(saved[k].shape) != tuple(v.shape)]
    if differ:
        shown = "; ".join(f"{k}: {a} in the checkpoint, {b} now" for k, a, b in differ[:3])
        more = f"; and {len(differ) - 3} more" if len(differ) > 3 else ""
        return f"its tensor shapes differ from the model's ({shown}{more})"
    return None


def _optimizer_misfit(optimizer, saved: dict, saved_name: Any, name: str) -> Optional[str]:
    """Why the checkpoint's optimiser state (structure already checked) does not fit ``optimizer`` (None if it fits):
    another optimiser (``optim.name``), other groups, or state tensors of other shapes. Settings a group lacks (an
    older torch's) do not matter: the current config's settings are put back after loading."""
    if saved_name is not None and saved_name != name:
        return f"its optimiser state is optim.name={saved_name}'s, not {name}'s ('optimizer')"
    groups, now = saved["param_groups"], optimizer.param_groups
    if len(groups) != len(now):
        return f"'optimizer.param_groups' has {len(groups)} parameter groups, the current optimiser {len(now)}"
    ids = [p for g in groups for p in g["params"]]
    if len(set(ids)) != len(ids):
        return "'optimizer.param_groups' lists a parameter twice"
    params: Dict[Any, torch.Tensor] = {}  # saved parameter id -> the current parameter
    for n, (old, new) in enumerate(zip(groups, now)):
        if len(old["params"]) != len(new["params"]):
            return (f"'optimizer.param_groups[{n}]' holds {len(old['params'])} parameters, the current optimiser's "
                    f"{len(new['params'])}")
        params.update(zip(old["params"], new["params"]))
    for pid, slots in saved["state"].items():
        if pid not in params:
            return f"'optimizer.state' holds parameter id {pid!r}, which no parameter group lists"
        shape = tuple(params[pid].shape)
        for name, value in slots.items():
            if torch.is_tensor(value) and value.ndim > 0 and tuple(value.shape) != shape:
                return f"'optimizer.state[{pid}].{name}' has shape {tuple(value.shape)}, its parameter {shape}"
    return None
