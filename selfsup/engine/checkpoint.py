"""Checkpoints: plain tensors and containers only, written atomically, read with ``torch.load(weights_only=True)``.

* ``last.ckpt``: everything needed to continue exactly (method state with the EMA targets, optimiser state, the step,
  the resolved config as a plain dict). Written to a temporary file in the same folder, flushed and fsync'ed, then
  ``os.replace``'d over the old one, so a kill at any moment leaves either the old or the new file, never half of one.
* ``backbone.safetensors``: the online encoder alone, with the config as YAML in the metadata, for evaluation and
  export. Nothing is ever unpickled.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

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
    """Load a checkpoint with ``weights_only=True``; a missing, truncated or foreign file is a one-line error."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, truncated zip, refused globals
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot load checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a selfsup checkpoint")
    problem = _structure_problem(state)
    if problem:
        raise CheckpointError(f"{path} is a damaged selfsup checkpoint: {problem}")
    return state


def _structure_problem(state: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a loaded checkpoint's structure (None if nothing): the keys every consumer reads."""
    step = state.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' must be a non-negative integer, got {step!r}"[:200]
    method = state.get("method")
    if not isinstance(method, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in method.items()):
        return "'method' must map parameter names to tensors"
    if not isinstance(state.get("optimizer"), dict):
        return "'optimizer' must be a dict"
    if not isinstance(state.get("config"), dict):
        return "'config' must be a dict"
    for key in ("total_steps", "skipped"):
        if key in state and (not isinstance(state[key], int) or state[key] < 0):
            return f"'{key}' must be a non-negative integer"
    if "trained_s" in state and not (isinstance(state["trained_s"], (int, float)) and state["trained_s"] >= 0):
        return "'trained_s' must be a non-negative number"
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
