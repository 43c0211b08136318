"""Lightning Fabric for a pretraining run: devices checked in one line, the precision, the TensorBoard logger, and
which process takes the run folder's lock.

Fabric provides devices, DDP (single- and multi-node, gloo or NCCL), mixed precision and the TensorBoard logger; the
loop itself is ours (:mod:`selfsup.engine.trainer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Literal, cast

import torch

from selfsup.config import Config
from selfsup.errors import ConfigError

__all__ = ["check_devices", "locks_the_run_folder", "make_fabric", "resolve_precision"]


#: what ``train.precision`` resolves to (the config accepts only these, ``32`` and ``auto``)
Precision = Literal["32-true", "bf16-mixed", "16-mixed"]


def resolve_precision(precision: str, accelerator: str) -> Precision:
    """``auto``: bf16 autocast on CUDA devices that support it, full fp32 elsewhere (bf16 on CPUs without it is
    slow)."""
    if precision != "auto":
        return cast(Precision, "32-true" if precision == "32" else precision)  # one of them: the config checked it
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def check_devices(t) -> None:
    """One-line errors for devices this machine does not have (Fabric would raise deep inside its setup)."""
    if t.num_nodes > 1:  # other machines' devices cannot be checked from here, but the launcher's variables can
        launched = any(k in os.environ for k in ("NODE_RANK", "GROUP_RANK", "SLURM_NODEID", "LOCAL_RANK"))
        if not launched:
            raise ConfigError(f"train.num_nodes={t.num_nodes} needs a multi-node launcher (torchrun --nnodes, "
                              f"srun, ...) that sets NODE_RANK / SLURM_NODEID; none is set here")
        return
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if t.accelerator in ("cuda", "gpu") and gpus == 0:
        raise ConfigError(f"train.accelerator={t.accelerator}, but this machine has no CUDA GPU "
                          f"(use train.accelerator=cpu or auto)")
    if t.accelerator == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("train.accelerator=mps, but MPS is not available on this machine")
    on_gpu = t.accelerator in ("cuda", "gpu") or (t.accelerator == "auto" and gpus > 0)
    if on_gpu and t.devices > gpus:
        raise ConfigError(f"train.devices={t.devices}, but this machine has {gpus} GPU(s)")
    cores = os.cpu_count() or 1
    if not on_gpu and t.accelerator != "mps" and t.devices > cores:
        raise ConfigError(f"train.devices={t.devices} CPU processes, but this machine has {cores} cores")


def make_fabric(cfg: Config, out_dir: Path):
    """The run's Fabric (``train.accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``) with a
    TensorBoard logger in ``<out_dir>/tensorboard``; it reads and writes nothing in ``out_dir`` yet."""
    from lightning.fabric import Fabric
    from lightning.fabric.loggers import Logger, TensorBoardLogger

    t = cfg.train
    check_devices(t)
    loggers: List[Logger] = [TensorBoardLogger(root_dir=str(out_dir), name="tensorboard", version="")]
    return Fabric(accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
                  precision=resolve_precision(t.precision, t.accelerator), loggers=loggers)


def locks_the_run_folder(fabric) -> bool:
    """Whether this process takes the run folder's lock: the one that is, or after ``fabric.launch`` becomes, global
    rank 0 (only rank 0 writes in the folder). The processes Fabric starts (ddp_spawn's workers; the copies of this
    command that the subprocess launcher starts, with LOCAL_RANK set) and the other ranks of an externally launched
    run (torchrun, SLURM) do not, or a multi-process run would lock itself out."""
    env = getattr(fabric.strategy, "cluster_environment", None)
    if env is None:  # one device: one process
        return True
    try:
        from lightning.fabric.plugins.environments import LightningEnvironment

        if isinstance(env, LightningEnvironment):  # its global rank is only set at launch: read LOCAL/NODE_RANK
            return env.local_rank() == 0 and env.node_rank() == 0
        return env.global_rank() == 0  # torchrun (RANK), SLURM (SLURM_PROCID), ...: from the launcher's variables
    except Exception:  # noqa: BLE001 - an environment that cannot tell yet: a single process is the common case
        return True
