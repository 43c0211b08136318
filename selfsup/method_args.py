"""The configuration schema of every method: one dataclass of arguments per ``method.name`` (the papers' names for
their hyper-parameters), each with a ``validate()`` that turns a bad value into a one-line
:class:`~selfsup.errors.ConfigError`.

They live in the config layer, below :mod:`selfsup.methods`, so that :func:`selfsup.config.load_config` knows every
method's options without importing the methods (lower layers never import higher ones); each method module imports
its own arguments from here. A plug-in method registers its arguments with :func:`register_method_args`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from selfsup.errors import ConfigError

#: method name -> its arguments dataclass (with a ``name`` field and ``validate()``).
METHOD_ARGS: Dict[str, type] = {}

MLP_NORMS = ("batch", "layer", "none")  # normalisation choices of the heads (selfsup.models.heads.MLP)
TEACHER_TEMPERATURE_SCHEDULES = ("linear", "cosine")  # DINO's teacher temperature warm-up shapes


def register_method_args(name: str):
    """Class decorator: make a method's arguments dataclass selectable with ``method.name=<name>``."""

    def wrap(cls: type) -> type:
        METHOD_ARGS[name] = cls
        return cls

    return wrap


def at_least(args, keys, low: int = 1) -> None:
    """``method.<key> >= low`` for every key (counts and sizes), else a one-line :class:`ConfigError`."""
    for key in keys:
        if getattr(args, key) < low:
            raise ConfigError(f"method.{key} must be >= {low}, got {getattr(args, key)}")


def positive(args, keys) -> None:
    """``method.<key> > 0`` for every key (temperatures, rates), else a one-line :class:`ConfigError`."""
    for key in keys:
        if getattr(args, key) <= 0:
            raise ConfigError(f"method.{key} must be > 0, got {getattr(args, key)}")


def check_alpha(alpha) -> None:
    """Config check of SSLight's re-balancing weight ``method.alpha`` (every method has it): in [0, 1] or null."""
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"method.alpha must be in [0, 1] or null, got {alpha}")


@dataclass
class BootstrapArgs:
    """Arguments of the online/target pair (defaults from BYOL section 3.3 and RELICv2 Tables 18-19)."""

    name: str = ""
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean
    ema_base: float = 0.996  # target momentum at step 0, cosine to 1
    projector_hidden: int = 4096
    projector_dim: int = 256
    predictor_hidden: int = 4096
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        check_alpha(self.alpha)
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim", "predictor_hidden"))


@register_method_args("relicv2")
@dataclass
class RELICv2Args(BootstrapArgs):
    """RELICv2's hyper-parameters (names as in the paper; defaults from Tables 18-19 and method-details A2).

    ``alpha`` (SSLight re-balancing of large-large vs small-large pairs) is None by default: the plain mean of eq. 3.
    """

    name: str = "relicv2"
    temperature: float = 0.2  # tau
    beta: float = 1.0  # invariance (KL) scale
    contrast_scale: float = 1.0  # c: scale of the contrastive likelihood
    num_negatives: Optional[int] = 10  # n_e; None = all other items of the (global) batch
    # eq. 3's double loop includes the same crop on both sides (online l vs target l); false drops those L terms
    same_crop_pairs: bool = True

    def validate(self) -> None:
        super().validate()
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if self.beta < 0 or self.contrast_scale < 0:
            raise ConfigError("method.beta and method.contrast_scale must be >= 0")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ConfigError(f"method.num_negatives must be >= 1 or null, got {self.num_negatives}")


@register_method_args("relic")
@dataclass
class RELICArgs(RELICv2Args):
    """RELICv2's arguments with RELIC's negatives: all of the global batch."""

    name: str = "relic"
    num_negatives: Optional[int] = None  # n_e; None = all other items of the (global) batch


@register_method_args("byol")
@dataclass
class BYOLArgs(BootstrapArgs):
    """BYOL's hyper-parameters (defaults from the paper, section 3.3): those of the online/target pair."""

    name: str = "byol"


@register_method_args("simclr")
@dataclass
class SimCLRArgs:
    """SimCLR's hyper-parameters (names as in the paper)."""

    name: str = "simclr"
    temperature: float = 0.1  # tau
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "batch"  # batch | none

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        check_alpha(self.alpha)
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim"))


@register_method_args("mocov2")
@dataclass
class MoCoV2Args:
    """MoCo-v2's hyper-parameters (defaults: SSLight's ``moco_cnn_*.yaml``, method-details B 1.4)."""

    name: str = "mocov2"
    temperature: float = 0.2  # T
    queue_size: int = 65536  # K negatives
    momentum: float = 0.999  # key encoder EMA momentum, constant
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "none"  # none (MoCo-v2) | batch | layer
    alpha: Optional[float] = None  # SSLight: weight of the global query; None = plain mean over queries
    symmetric: bool = False  # both large views give a key and a query (MoCo-v2+ / MoCo-v3); False = SSLight's MoCo

    def validate(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if self.queue_size < 1:
            raise ConfigError(f"method.queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ConfigError(f"method.momentum must be in [0, 1], got {self.momentum}")
        if self.head_norm not in MLP_NORMS:
            raise ConfigError(f"method.head_norm must be one of {', '.join(MLP_NORMS)}, got '{self.head_norm}'")
        at_least(self, ("projector_hidden", "projector_dim"))
        check_alpha(self.alpha)


@register_method_args("swav")
@dataclass
class SwAVArgs:
    """SwAV's hyper-parameters (defaults: SSLight's ``swav_cnn_*.yaml``, method-details B 1.4)."""

    name: str = "swav"
    num_prototypes: int = 3000
    temperature: float = 0.1  # T of the swapped prediction
    epsilon: float = 0.05  # Sinkhorn entropy regularisation
    sinkhorn_iterations: int = 3
    queue_length: int = 3840  # per large view; 0 = no queue; rounded down to a multiple of train.batch_size
    queue_start_epoch: int = 15
    freeze_prototypes_epochs: int = 1
    projector_hidden: int = 2048
    projector_dim: int = 128
    head_norm: str = "batch"  # batch (SwAV) | none | layer
    alpha: Optional[float] = None  # SSLight re-balancing of large-large vs small-large pairs; None = plain mean

    def validate(self) -> None:
        at_least(self, ("num_prototypes", "sinkhorn_iterations", "projector_hidden", "projector_dim"))
        positive(self, ("temperature", "epsilon"))
        at_least(self, ("queue_length", "queue_start_epoch", "freeze_prototypes_epochs"), 0)
        if self.head_norm not in MLP_NORMS:
            raise ConfigError(f"method.head_norm must be one of {', '.join(MLP_NORMS)}, got '{self.head_norm}'")
        check_alpha(self.alpha)


@register_method_args("dino")
@dataclass
class DINOArgs:
    """DINO's hyper-parameters (defaults: SSLight's MobileNetV2 setting, method-details B 1.4, and DINO's paper)."""

    name: str = "dino"
    out_dim: int = 4096  # K: prototypes of the weight-normalised last layer
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    head_norm: str = "batch"  # batch (SSLight CNN) | none (DINO ViT)
    norm_last_layer: bool = True  # keep the last layer's weight-norm g fixed at 1
    student_temperature: float = 0.1
    teacher_temperature: float = 0.07  # after the warm-up
    warmup_teacher_temperature: float = 0.04  # at epoch 0
    teacher_temperature_warmup_epochs: float = 50.0
    teacher_temperature_schedule: str = "linear"  # linear | cosine
    center_momentum: float = 0.9
    ema_base: float = 0.996  # teacher momentum at step 0, cosine to 1
    freeze_last_layer_epochs: int = 1  # last layer's gradients dropped while ctx.epoch < this
    alpha: Optional[float] = None  # SSLight re-balancing of global-global vs global-local pairs; None = plain mean

    def validate(self) -> None:
        at_least(self, ("out_dim", "hidden_dim", "bottleneck_dim"))
        if self.head_norm not in ("batch", "none"):
            raise ConfigError(f"method.head_norm must be batch or none, got '{self.head_norm}'")
        positive(self, ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"))
        if self.teacher_temperature_warmup_epochs < 0:
            raise ConfigError(f"method.teacher_temperature_warmup_epochs must be >= 0, "
                              f"got {self.teacher_temperature_warmup_epochs}")
        if self.teacher_temperature_schedule not in TEACHER_TEMPERATURE_SCHEDULES:
            raise ConfigError(f"method.teacher_temperature_schedule must be linear or cosine, "
                              f"got '{self.teacher_temperature_schedule}'")
        if not 0.0 <= self.center_momentum <= 1.0:
            raise ConfigError(f"method.center_momentum must be in [0, 1], got {self.center_momentum}")
        if not 0.0 <= self.ema_base <= 1.0:
            raise ConfigError(f"method.ema_base must be in [0, 1], got {self.ema_base}")
        if self.freeze_last_layer_epochs < 0:
            raise ConfigError(f"method.freeze_last_layer_epochs must be >= 0, got {self.freeze_last_layer_epochs}")
        check_alpha(self.alpha)


@register_method_args("rotation")
@dataclass
class RotationArgs:
    name: str = "rotation"

    def validate(self) -> None:
        pass


@register_method_args("exemplar")
@dataclass
class ExemplarArgs:
    name: str = "exemplar"
    embedding_dim: int = 1000  # the "logits" layer the triplet loss reads
    margin: float = 0.5
    grayscale_p: float = 2.0 / 3.0  # per image, shared by its copies

    def validate(self) -> None:
        if self.embedding_dim < 1:
            raise ConfigError(f"method.embedding_dim must be >= 1, got {self.embedding_dim}")
        if self.margin < 0:
            raise ConfigError(f"method.margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ConfigError(f"method.grayscale_p must be in [0, 1], got {self.grayscale_p}")


@dataclass
class PatchTaskArgs:
    name: str = ""
    patch_size: int = 64  # reference: 64 px patches in 85 px cells of a 255 px crop
    grayscale_p: float = 2.0 / 3.0  # per image
    embedding_dim: int = 1000  # per-patch "logits" layer
    head_hidden: int = 4096
    head_dropout: float = 0.5

    def validate(self) -> None:
        at_least(self, ("patch_size", "embedding_dim", "head_hidden"))
        if not 0.0 <= self.grayscale_p <= 1.0:
            raise ConfigError(f"method.grayscale_p must be in [0, 1], got {self.grayscale_p}")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"method.head_dropout must be in [0, 1), got {self.head_dropout}")


@register_method_args("jigsaw")
@dataclass
class JigsawArgs(PatchTaskArgs):
    name: str = "jigsaw"
    perms_per_batch: int = 8  # permutations drawn per step from the 100, shared by the batch

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.perms_per_batch <= 100:
            raise ConfigError(f"method.perms_per_batch must be in [1, 100], got {self.perms_per_batch}")


@register_method_args("relpatch")
@dataclass
class RelPatchArgs(PatchTaskArgs):
    name: str = "relpatch"
