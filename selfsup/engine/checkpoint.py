"""Checkpoints: plain tensors and containers only, written atomically, read with ``torch.load(weights_only=True)``.

* ``last.ckpt``: everything needed to continue exactly (method state with the EMA targets, optimiser state, the step,
  the resolved config as a plain dict). Written to a temporary file in the same folder, flushed and fsync'ed, then
  ``os.replace``'d over the old one, so a kill at any moment leaves either the old or the new file, never half of one.
* ``backbone.safetensors``: the online encoder alone, with the config as YAML in the metadata, for evaluation and
  export. Nothing is ever unpickled.
"""

from __future__ import annotations

import io
import math
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from selfsup.errors import CheckpointError
from selfsup.fileio import atomic_replace as _atomic_replace
from selfsup.fileio import atomic_write_bytes

FORMAT = "selfsup-checkpoint-v1"


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    """Atomically save a training checkpoint (a dict of tensors, numbers, strings, lists and dicts)."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def link_checkpoint(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src`` (a hard link where the filesystem allows: no bytes are copied)."""
    def fill(tmp: str) -> None:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)

    _atomic_replace(Path(dst), fill)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file, or one whose fields are
    missing or of the wrong type, is a one-line error naming the file (and the field)."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} holds a backbone's weights only, not a training checkpoint; resume from the "
                              f"run's last.ckpt (or its folder)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, refused globals
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first[:300]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a selfsup checkpoint")
    problem = _structure_problem(state)
    if problem:
        raise CheckpointError(f"{path} is a damaged selfsup checkpoint: {problem}")
    return state


def _count(value: Any) -> bool:
    """A non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _structure_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a loaded checkpoint's structure (None if nothing): every field a consumer reads, named."""
    if "step" not in state:
        return "the field 'step' is missing ('step' must be a non-negative integer)"
    step = state["step"]
    if not _count(step):
        return f"'step' must be a non-negative integer, got {step!r}"[:200]
    for key, what in (("method", "a mapping of parameter names to tensors"), ("optimizer", "a dict"),
                      ("config", "a dict")):
        if key not in state:
            return f"the field '{key}' is missing ('{key}' must be {what})"
    method = state["method"]
    if not isinstance(method, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in method.items()):
        return "'method' must map parameter names to tensors"
    if not isinstance(state["optimizer"], dict):  # its inside: optimizer_problem, when resuming
        return "'optimizer' must be a dict"
    if not isinstance(state["config"], dict):
        return "'config' must be a dict"
    for key in ("total_steps", "skipped"):
        if key in state and not _count(state[key]):
            return f"'{key}' must be a non-negative integer, got {state[key]!r}"[:200]
    if "skipped_indices" in state:
        ids = state["skipped_indices"]
        if not isinstance(ids, list) or not all(_count(i) for i in ids):
            return "'skipped_indices' must be a list of non-negative integers (dataset indices)"
    trained = state.get("trained_s", 0.0)
    if not (isinstance(trained, (int, float)) and not isinstance(trained, bool) and math.isfinite(trained)
            and trained >= 0):
        return f"'trained_s' must be a non-negative number, got {trained!r}"[:200]
    if "monitor" in state and not isinstance(state["monitor"], dict):
        return "'monitor' must be a dict"
    return None


def optimizer_problem(opt: Any) -> Optional[str]:
    """What is wrong with a checkpoint's saved ``optimizer.state_dict()`` (None if nothing): its fields, named. Only a
    resumed run reads it (:func:`load_checkpoint` leaves it to the caller)."""
    if not isinstance(opt, dict):
        return "'optimizer' must be a dict"
    for key in ("state", "param_groups"):
        if key not in opt:
            return f"the field 'optimizer.{key}' is missing"
    if not isinstance(opt["state"], dict) or not all(isinstance(v, dict) for v in opt["state"].values()):
        return "'optimizer.state' must map parameter ids to dicts"
    groups = opt["param_groups"]
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        return "'optimizer.param_groups' must be a list of dicts"
    for n, g in enumerate(groups):
        params = g.get("params")
        if not isinstance(params, list) or not all(_count(p) for p in params):
            return f"'optimizer.param_groups[{n}].params' must be a list of parameter ids"
    return None


def save_backbone(path: Path, backbone: nn.Module, config_yaml: str, extra: Optional[Dict[str, str]] = None) -> None:
    """The online encoder as safetensors, with the run's config (and any ``extra`` strings) in the metadata, written
    atomically."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata={**(extra or {}), "format": FORMAT,
                                                                            "config": config_yaml}))


def atomic_save_safetensors(path: Path, tensors: Dict[str, torch.Tensor], metadata: Dict[str, str]) -> None:
    """Any tensors as safetensors with string metadata, written atomically (e.g. ``selfsup export``)."""
    _atomic_replace(Path(path), lambda tmp: save_file(tensors, tmp, metadata={k: str(v) for k, v in metadata.items()}))


def load_backbone_weights(backbone: nn.Module, path: Path | str, what: str, cfg_model: Any) -> None:
    """Load the backbone stored at ``path`` (:func:`load_backbone_state`) into ``backbone``; a checkpoint that does not
    fit ``cfg_model`` (another backbone or width; missing or extra tensors) is a one-line ``CheckpointError`` that
    starts with ``what`` (the option or path the user gave)."""
    state, _ = load_backbone_state(path)
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a shape mismatch: e.g. model.width overridden against the checkpoint
        first = str(exc).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0] if first else "")
        raise CheckpointError(f"{what} does not fit model.backbone={cfg_model.backbone} "
                              f"width={cfg_model.width}: {detail[:200]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{what} does not fit model.backbone={cfg_model.backbone} "
                              f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")


def load_backbone_state(path: Path | str) -> Tuple[Dict[str, torch.Tensor], Optional[str]]:
    """(state_dict, config YAML or None) of the backbone stored in a ``.safetensors`` file or a training checkpoint."""
    path = Path(path)
    if path.is_dir():
        for name in ("backbone.safetensors", "last.ckpt"):
            if (path / name).is_file():
                path = path / name
                break
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CheckpointError(f"backbone file not found: {path}")
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            return load_file(str(path)), meta.get("config")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load {path}: {str(exc).splitlines()[0]}") from None
    state = load_checkpoint(path)
    prefix = "backbone."
    tensors = {k[len(prefix):]: v for k, v in state["method"].items() if k.startswith(prefix)}
    if not tensors:
        raise CheckpointError(f"{path} holds no online backbone weights")
    import yaml

    return tensors, yaml.safe_dump(state["config"], sort_keys=False)
