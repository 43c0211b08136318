"""Typed configuration: one schema for pretraining and evaluation, YAML recipes and ``key=value`` overrides.

A run is described by :class:`Config`. Recipes in ``selfsup/recipes/`` are partial YAML files merged over the defaults
below; any key can then be overridden on the command line with a dotted path (``optim.base_lr=0.1``,
``views.large.count=2``). Merging and type checking are OmegaConf's; ranges and choices are checked in ``validate``
methods. Every failure becomes one :class:`~selfsup.errors.ConfigError` line that names the option.

The method block is method-specific: ``method.name`` picks a dataclass from :data:`METHOD_ARGS` (the registry of
:mod:`selfsup.method_args`, filled by each method's file when :mod:`selfsup.methods` is imported), and the other
``method.*`` keys are checked against it.

Names follow the papers: views are *large*/*small* (RELICv2; SSLight calls them global/local), ``temperature`` is tau,
``beta`` the invariance scale, ``num_negatives`` n_e, ``views.mask_p`` p_m, ``method.alpha`` SSLight's alpha.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from selfsup.errors import ConfigError
from selfsup.method_args import METHOD_ARGS

# --------------------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------------------

#: Checks of ``data.dataset`` and of the chosen dataset's own settings (e.g. ``data.train_size`` of the built-in
#: shapes), run first by :meth:`DataConfig.validate`. Datasets register in the data layer, above this one
#: (:func:`selfsup.data.registry.register_dataset`), which this layer never imports: once the built-ins are registered,
#: the data layer adds its check here (:mod:`selfsup.data.sources`). A process that has loaded the data layer (any
#: import of ``selfsup.data.datasets``) so refuses a bad dataset setting when the config is loaded; ``build_dataset``
#: runs the same check in every case.
DATA_CHECKS: List[Callable[["DataConfig"], Any]] = []


@dataclass
class DataConfig:
    """Where images come from. Every dataset yields square uint8 RGB images of ``image_size`` pixels.

    The settings stay flat (recipes, overrides and the saved configs of old runs name them ``data.<key>``); the
    settings that only one dataset reads are checked by that dataset's registered ``validate`` (:data:`DATA_CHECKS`),
    the others here.
    """

    dataset: str = "shapes"
    # folder/cifar: the directory; shards: a `selfsup data pack` output; fashion_mnist: overrides the Debian path
    root: Optional[str] = None
    test_root: Optional[str] = None  # folder: the evaluation folder (default: ROOT/val or ROOT/test if present)
    # folders: short side resized to this (then centre-cropped, except crop_from=whole); built-ins: native or resized
    image_size: int = 32
    # folders, pretraining: views are cropped from the whole image (aspect kept) or its centre square ("center")
    crop_from: str = "whole"
    # folders/shards, pretraining: "device" decodes JPEGs batched on the training device (nvJPEG on CUDA);
    # auto: device on CUDA, else cpu
    decode: str = "auto"
    # folders with crop_from=whole: the long side is cut (centred) to at most this many short sides
    max_aspect: float = 3.0
    # built-in procedural dataset ("shapes"; checked in selfsup.data.sources.shapes)
    num_classes: int = 10
    train_size: int = 10000
    test_size: int = 2000
    spurious: float = 0.0  # probability that an image's background family is the one tied to its class
    # the test split's (None: as spurious; 0 = backgrounds shuffled across classes)
    test_spurious: Optional[float] = None
    backgrounds: Optional[List[str]] = None  # background families drawn from (None: all; see selfsup.data.shapes)
    # any dataset
    limit: Optional[int] = None  # use only the first N images of each split (quick runs)
    skip_corrupt: bool = False  # skip unreadable images (counted and logged) instead of stopping
    max_pixels: int = 89_478_485  # folders: refuse an image above this many pixels before decoding it (Pillow's limit)
    workers: int = 0  # DataLoader worker processes
    mean: Optional[List[float]] = None  # normalisation; None takes the dataset's own statistics
    std: Optional[List[float]] = None

    def validate(self) -> None:
        for check in DATA_CHECKS:  # data.dataset and the settings of its own
            check(self)
        _positive("data.image_size", self.image_size)
        if self.limit is not None:
            _positive("data.limit", self.limit)
        _positive("data.max_pixels", self.max_pixels)
        _choice("data.crop_from", self.crop_from, ("whole", "center"))
        _choice("data.decode", self.decode, ("auto", "cpu", "device"))
        if not (self.max_aspect >= 1.0 and math.isfinite(self.max_aspect)):
            raise ConfigError(f"data.max_aspect must be a finite number >= 1, got {self.max_aspect}")
        if self.workers < 0:
            raise ConfigError(f"data.workers must be >= 0, got {self.workers}")
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != 3:
                raise ConfigError(f"data.{key} needs 3 values (R, G, B), got {list(value)}")
        # data.root for folder/cifar is checked when the dataset is built, so that recipes whose data lives elsewhere
        # (ImageNet) still load for `selfsup views inspect` and `selfsup recipes`


@dataclass
class ViewGroupConfig:
    """One group of views of the same output size (RELICv2 large/small; SSLight global/local).

    List-valued settings are cycled over the views of the group: view ``v`` (0-based) takes entry ``v % len(list)``.
    RELICv2's Table 4 (method-details A3) alternates "odd" settings (views 1, 3, ... in the paper's 1-based numbering,
    index 0, 2, ... here) and "even" settings, so its lists have two entries: ``[odd, even]``.
    """

    count: int = 2
    size: int = 224
    scale_min: List[float] = field(default_factory=lambda: [0.08])  # crop area fraction, lower bound (cycled)
    scale_max: float = 1.0  # crop area fraction, upper bound
    blur_p: List[float] = field(default_factory=lambda: [1.0, 0.1])  # cycled
    solarize_p: List[float] = field(default_factory=lambda: [0.0, 0.2])  # cycled
    center_crop: bool = False  # centred boxes instead of random positions (RELICv2 App. D reading for small views)
    maskable: bool = False  # whether saliency/foreground masking may replace this group's background (A4)

    def validate(self, name: str) -> None:
        if self.count < 0:
            raise ConfigError(f"views.{name}.count must be >= 0, got {self.count}")
        _positive(f"views.{name}.size", self.size)
        for key in ("scale_min", "blur_p", "solarize_p"):
            values = getattr(self, key)
            if len(values) == 0:
                raise ConfigError(f"views.{name}.{key} needs at least one value")
            for v in values:
                _unit(f"views.{name}.{key}", v)
        if not 0.0 < self.scale_max <= 1.0:
            raise ConfigError(f"views.{name}.scale_max must be in (0, 1], got {self.scale_max}")
        for lo in self.scale_min:
            if not 0.0 < lo <= self.scale_max:
                raise ConfigError(f"views.{name}.scale_min values must be in (0, scale_max={self.scale_max}], got {lo}")


def _relic_large() -> ViewGroupConfig:
    # Table 4 as read in method-details A3: odd views crop 0.14-1, blur 0.1, solarize 0.2; even 0.08-1, 1.0, 0.0.
    return ViewGroupConfig(count=4, size=224, scale_min=[0.14, 0.08], scale_max=1.0, blur_p=[0.1, 1.0],
                           solarize_p=[0.2, 0.0], maskable=True)


def _relic_small() -> ViewGroupConfig:
    return ViewGroupConfig(count=2, size=96, scale_min=[0.05], scale_max=0.14, blur_p=[0.1, 1.0],
                           solarize_p=[0.2, 0.0], maskable=False)


MASK_SOURCES = ("dataset", "cache", "random_pixels", "random_rect", "center_rect")
MASK_EDITS = ("none", "add_center", "remove_center", "bbox")


@dataclass
class ViewsConfig:
    """Multi-view sampling: L large and S small views per image, shared colour settings, and the mask hook (A3, A4)."""

    large: ViewGroupConfig = field(default_factory=_relic_large)
    small: ViewGroupConfig = field(default_factory=_relic_small)
    ratio: List[float] = field(default_factory=lambda: [3.0 / 4.0, 4.0 / 3.0])  # aspect range, log-uniform
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_sigma: List[float] = field(default_factory=lambda: [0.1, 2.0])  # sigma ~ U(lo, hi), in pixels of the view
    blur_kernel_frac: float = 0.1  # kernel side ~ 10% of the view side, rounded to odd (23 taps at 224)
    mask_p: float = 0.1  # p_m: probability that a maskable view uses the background-masked image
    mask_min_fraction: float = 0.05  # masking applies only if the mask covers at least this much of the image
    # Where masks come from (selfsup.data.masks): dataset (its own: the built-in data's ground truth) | cache (a
    # `selfsup saliency predict` cache, views.mask_cache) | random_pixels | random_rect | center_rect (RELICv2 Table 16,
    # covering views.mask_area of the image, drawn afresh every step)
    mask_source: str = "dataset"
    mask_cache: Optional[str] = None  # mask_source=cache: the cache folder written by `selfsup saliency predict`
    mask_area: float = 0.5  # a_p of the random/centred masks
    # Corruption of dataset/cache masks (Table 17 and the bounding box): none | add_center | remove_center | bbox
    mask_edit: str = "none"
    mask_edit_fraction: float = 0.1  # m_p: the centred rectangle's area as a fraction of the mask's area

    def validate(self) -> None:
        _choice("views.mask_source", self.mask_source, MASK_SOURCES)
        _choice("views.mask_edit", self.mask_edit, MASK_EDITS)
        if self.mask_edit != "none" and self.mask_source not in ("dataset", "cache"):
            raise ConfigError(f"views.mask_edit={self.mask_edit} corrupts dataset or cache masks, not "
                              f"views.mask_source={self.mask_source}")
        _unit("views.mask_area", self.mask_area)
        _unit("views.mask_edit_fraction", self.mask_edit_fraction)
        self.large.validate("large")
        self.small.validate("small")
        if self.large.count < 1:
            raise ConfigError("views.large.count must be >= 1")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"views.ratio must be [lo, hi] with 0 < lo <= hi, got {list(self.ratio)}")
        if len(self.blur_sigma) != 2 or not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"views.blur_sigma must be [lo, hi] with 0 < lo <= hi, got {list(self.blur_sigma)}")
        for key in ("flip_p", "jitter_p", "grayscale_p", "mask_p", "mask_min_fraction", "blur_kernel_frac"):
            _unit(f"views.{key}", getattr(self, key))
        for key in ("brightness", "contrast", "saturation"):
            if getattr(self, key) < 0:
                raise ConfigError(f"views.{key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.hue <= 0.5:
            raise ConfigError(f"views.hue must be in [0, 0.5], got {self.hue}")


@dataclass
class ModelConfig:
    """The encoder f: a backbone from the registry, whose output is the pooled pre-logits representation."""

    backbone: str = "convnet_tiny"
    width: float = 1.0  # width multiplier of every stage (RELICv2 Table 5: 1x, 2x, 4x)
    # auto | imagenet | small | patch_task: "auto" picks the small stem for inputs <= small_stem_max_size; patch_task is
    # Revisiting's override for the 64 px patches of Jigsaw/RPL (root conv stride 1, stage strides 1,2,2,1)
    stem: str = "auto"
    small_stem_max_size: int = 64
    norm: str = "batch"  # batch | group | none (group/none make a step independent of how the batch is split)
    patch_size: Optional[int] = None  # ViTs only: overrides the patch size of the name (e.g. 4 for 32 px images)
    drop_path_rate: float = 0.0  # stochastic depth, largest rate (last block); mobilenetv2 and the ViTs only
    # ResNets, RevNet, VGG only: units per stage (ResNet-50: [3, 4, 6, 3]; VGG-19: convs per block [2, 2, 4, 4, 4]);
    # None keeps the name's. Shallower variants let the Revisiting grid run on a CPU.
    stage_units: Optional[List[int]] = None
    last_relu: bool = True  # ResNets, RevNet, VGG only: false = Revisiting's "(-)" variants, no ReLU at the very end
    # an extra linear layer after the pooling sets the representation (pre-logits) size independently of the width
    # (Revisiting Sec. 4.6); None: no layer
    representation_dim: Optional[int] = None

    def validate(self) -> None:
        _choice("model.stem", self.stem, ("auto", "imagenet", "small", "patch_task"))
        if self.representation_dim is not None:
            _positive("model.representation_dim", self.representation_dim)
        if self.stage_units is not None and (len(self.stage_units) == 0 or any(u < 1 for u in self.stage_units)):
            raise ConfigError(f"model.stage_units must be positive unit counts, got {list(self.stage_units)}")
        _choice("model.norm", self.norm, ("batch", "group", "none"))
        if not 0 < self.width <= 64:  # 64x a ResNet-50 is ~100 billion parameters: anything above is a typo
            raise ConfigError(f"model.width must be in (0, 64], got {self.width}")
        if self.patch_size is not None:
            _positive("model.patch_size", self.patch_size)
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule: lr = base_lr * global_batch / 256, linear warm-up, then cosine."""

    name: str = "lars"  # lars | sgd | adamw
    base_lr: float = 0.3
    min_lr_ratio: float = 0.0  # final lr as a fraction of the peak
    weight_decay: float = 1e-6
    momentum: float = 0.9
    nesterov: bool = False
    trust_coefficient: float = 1e-3  # LARS eta
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW
    warmup_epochs: float = 10.0
    warmup_steps: Optional[int] = None  # overrides warmup_epochs
    schedule: str = "cosine"  # after the warm-up: cosine to min_lr_ratio, or step: x gamma at each milestone epoch
    milestones: List[float] = field(default_factory=lambda: [15.0, 25.0])  # schedule=step (Revisiting: 15, 25 of 35)
    gamma: float = 0.1  # schedule=step
    weight_decay_end: Optional[float] = None  # cosine schedule weight_decay -> weight_decay_end per step (SSLight ViT)
    depthwise_no_decay: bool = False  # SSLight/MobileNetV2: depthwise kernels get no decay but keep the LARS scaling
    clip_grad: Optional[float] = None  # clip gradients to this norm (DINO/SSLight ViT: 3.0, per parameter)
    clip_grad_mode: str = "global"  # global: the norm of all gradients; per_param: each parameter's own (DINO)

    def validate(self) -> None:
        _choice("optim.name", self.name, ("lars", "sgd", "adamw"))
        _choice("optim.schedule", self.schedule, ("cosine", "step"))
        if any(m <= 0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"optim.milestones must be increasing epochs > 0, got {list(self.milestones)}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"optim.gamma must be in (0, 1], got {self.gamma}")
        if self.base_lr <= 0:
            raise ConfigError(f"optim.base_lr must be > 0, got {self.base_lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        _unit("optim.min_lr_ratio", self.min_lr_ratio)
        if self.warmup_epochs < 0 or (self.warmup_steps is not None and self.warmup_steps < 0):
            raise ConfigError("optim warm-up must be >= 0")
        if self.weight_decay_end is not None and self.weight_decay_end < 0:
            raise ConfigError(f"optim.weight_decay_end must be >= 0, got {self.weight_decay_end}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two values in [0, 1), got {list(self.betas)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"optim.momentum must be in [0, 1), got {self.momentum}")
        if self.trust_coefficient <= 0:
            raise ConfigError(f"optim.trust_coefficient must be > 0, got {self.trust_coefficient}")
        _choice("optim.clip_grad_mode", self.clip_grad_mode, ("global", "per_param"))
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"optim.clip_grad must be > 0 or null, got {self.clip_grad}")


@dataclass
class TrainConfig:
    """The loop: batch, length, devices, precision, checkpoints and logging."""

    batch_size: int = 256  # global batch over all processes (each process takes batch_size / world_size)
    epochs: float = 100.0
    steps: Optional[int] = None  # overrides epochs: the schedule length in optimiser steps
    max_time_s: Optional[float] = None  # wall-clock budget: stop early (with a checkpoint) when exceeded
    # backbone snapshots <out>/snapshots/backbone_<M>min.safetensors after M minutes of training (learning curves)
    snapshot_minutes: List[float] = field(default_factory=list)
    # and <out>/snapshots/backbone_step<N>.safetensors every N steps (0 = off): accuracy against images seen (Fig. 5)
    snapshot_every_steps: int = 0
    accelerator: str = "auto"  # auto | cpu | cuda | mps
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | ddp_spawn
    precision: str = "auto"  # auto (bf16-mixed on GPUs that have it, else 32-true) | 32-true | bf16-mixed | 16-mixed
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = True  # convert BatchNorm to SyncBatchNorm under multi-GPU DDP (CPU gloo has no SyncBatchNorm)
    ckpt_every_steps: int = 500
    ckpt_every_minutes: float = 10.0
    log_every_steps: int = 10
    progress: bool = True
    threads: Optional[int] = None  # torch CPU threads (None: torch's default)

    def validate(self) -> None:
        _positive("train.batch_size", self.batch_size)
        if self.steps is not None:
            _positive("train.steps", self.steps)
        elif self.epochs <= 0:
            raise ConfigError(f"train.epochs must be > 0, got {self.epochs}")
        if self.max_time_s is not None:
            _positive("train.max_time_s", self.max_time_s)
        if self.threads is not None:
            _positive("train.threads", self.threads)
        _positive("train.ckpt_every_minutes", self.ckpt_every_minutes)
        _positive("train.devices", self.devices)
        _positive("train.num_nodes", self.num_nodes)
        _positive("train.ckpt_every_steps", self.ckpt_every_steps)
        _positive("train.log_every_steps", self.log_every_steps)
        for m in self.snapshot_minutes:
            _positive("train.snapshot_minutes", m)
        if not 0 <= self.snapshot_every_steps <= 10 ** 9:
            raise ConfigError(f"train.snapshot_every_steps must be >= 0 (0 = off), got {self.snapshot_every_steps}")
        _choice("train.accelerator", self.accelerator, ("auto", "cpu", "cuda", "gpu", "mps"))
        _choice("train.strategy", self.strategy, ("auto", "ddp", "ddp_spawn", "ddp_find_unused_parameters_true"))
        _choice("train.precision", self.precision, ("auto", "32-true", "32", "bf16-mixed", "16-mixed"))
        world = self.devices * self.num_nodes
        if self.batch_size % world:
            raise ConfigError(f"train.batch_size={self.batch_size} is not divisible by the {world} processes")


@dataclass
class LinearEvalConfig:
    """Linear probe on the frozen backbone (A6 for L-BFGS; RELICv2 App. D.1 for SGD)."""

    protocol: str = "lbfgs"  # lbfgs | sgd
    # L-BFGS on cached features
    val_fraction: float = 0.1  # held-out part of train used to choose the L2 strength
    l2_grid: List[float] = field(default_factory=lambda: [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    max_iter: int = 500
    # SGD protocol (App. D.1): 100 epochs, Nesterov 0.9, no weight decay, RRC + flip for training
    epochs: int = 100
    batch_size: int = 256
    base_lr: float = 0.3  # lr = base_lr * batch_size / 256, cosine, no warm-up
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    optimizer: str = "sgd"  # sgd | lars (SSLight's CNN probe: LARS, eta 1e-3, bias excluded)
    trust_coefficient: float = 1e-3  # optimizer=lars
    final_lr: float = 0.0  # the cosine ends here (SSLight: 1e-6)

    def validate(self) -> None:
        _choice("eval.linear.protocol", self.protocol, ("lbfgs", "sgd"))
        _choice("eval.linear.optimizer", self.optimizer, ("sgd", "lars"))
        _positive("eval.linear.trust_coefficient", self.trust_coefficient)
        if self.final_lr < 0:
            raise ConfigError(f"eval.linear.final_lr must be >= 0, got {self.final_lr}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"eval.linear.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.l2_grid or any(v < 0 for v in self.l2_grid):
            raise ConfigError("eval.linear.l2_grid needs non-negative values")
        _positive("eval.linear.epochs", self.epochs)
        _positive("eval.linear.batch_size", self.batch_size)
        _positive("eval.linear.max_iter", self.max_iter)


@dataclass
class KNNEvalConfig:
    """Weighted kNN on cosine similarity (Wu et al. 2018): votes weighted by exp(sim / temperature)."""

    k: List[int] = field(default_factory=lambda: [20, 200])
    temperature: float = 0.07

    def validate(self) -> None:
        if not self.k or any(v < 1 for v in self.k):
            raise ConfigError(f"eval.knn.k needs positive values, got {list(self.k)}")
        if self.temperature <= 0:
            raise ConfigError(f"eval.knn.temperature must be > 0, got {self.temperature}")


FINETUNE_HEADS = ("backbone", "projector")
FINETUNE_SCHEDULES = ("step", "cosine")


@dataclass
class FinetuneEvalConfig:
    """Fine-tuning of the pretrained encoder with a new linear classifier (:mod:`selfsup.eval.finetune`).

    The defaults are RELICv2's semi-supervised protocol (App. D.2) for the 10% subset; ``selfsup/recipes/eval/`` holds
    the paper presets (RELICv2 1% / 10%, SSLight 1% / 10%, plain fine-tuning on all labels).
    """

    labels: float = 0.1  # fraction of the training labels used, class-balanced (1.0 = all: plain fine-tuning)
    subset_seed: int = 0
    subset_dir: str = "subsets"  # subset files are written (and reused, validated) here
    head: str = "backbone"  # backbone: classifier on the pooled features; projector: on the head's 2nd layer (SSLight)
    head_layers: int = 2  # projector: how many of the pretrained head's Linear layers (with their norm/act) to keep
    epochs: int = 20
    batch_size: int = 512
    head_lr: float = 0.3  # the classifier's learning rate at batch_size (not rescaled)
    encoder_lr: float = 0.004  # the encoder's (and the kept projector layers') learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1.0e-5
    schedule: str = "step"  # step: x gamma at each milestone epoch (RELICv2); cosine: to final_lr (SSLight)
    milestones: List[int] = field(default_factory=lambda: [12, 16])
    gamma: float = 0.2
    final_lr: float = 0.0  # cosine only: the rate reached after the last step (SSLight: 1e-6)
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])

    def validate(self) -> None:
        if not 0 < self.labels <= 1:
            raise ConfigError(f"eval.finetune.labels must be in (0, 1] (a fraction of the labels), got {self.labels}")
        if self.subset_seed < 0:
            raise ConfigError(f"eval.finetune.subset_seed must be >= 0, got {self.subset_seed}")
        if not str(self.subset_dir).strip():
            raise ConfigError("eval.finetune.subset_dir must name a folder")
        _choice("eval.finetune.head", self.head, FINETUNE_HEADS)
        if not 1 <= self.head_layers <= 16:
            raise ConfigError(f"eval.finetune.head_layers must be in 1..16, got {self.head_layers}")
        if not 1 <= self.epochs <= 100000:
            raise ConfigError(f"eval.finetune.epochs must be in 1..100000, got {self.epochs}")
        if not 1 <= self.batch_size <= 1 << 20:
            raise ConfigError(f"eval.finetune.batch_size must be in 1..{1 << 20}, got {self.batch_size}")
        for key in ("head_lr", "encoder_lr", "weight_decay", "final_lr"):
            value = getattr(self, key)
            if not 0 <= value <= 1e4:
                raise ConfigError(f"eval.finetune.{key} must be in [0, 1e4], got {value}")
        if self.head_lr == 0 and self.encoder_lr == 0:
            raise ConfigError("eval.finetune.head_lr and encoder_lr are both 0: nothing would train")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"eval.finetune.momentum must be in [0, 1), got {self.momentum}")
        _choice("eval.finetune.schedule", self.schedule, FINETUNE_SCHEDULES)
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError(f"eval.finetune.milestones must be increasing epochs >= 1, got {list(self.milestones)}")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"eval.finetune.gamma must be in (0, 1], got {self.gamma}")
        if (len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1):
            raise ConfigError(f"eval.finetune.crop_scale must be [min, max] with 0 < min <= max <= 1, "
                              f"got {list(self.crop_scale)}")


TRANSFER_MODES = ("linear", "finetune")
TRANSFER_METRICS = ("top1", "mean_per_class")


@dataclass
class TransferEvalConfig:
    """Transfer to the dataset of ``data.*`` (RELICv2 App. D.3, after SimCLR and BYOL; :mod:`selfsup.eval.transfer`).

    ``linear``: L-BFGS logistic regression on frozen features, the L2 strength (``eval.linear.l2_grid``) chosen on a
    held-out ``val_fraction`` of train. ``finetune``: every (lr, weight decay, epochs) of the grid below is trained on
    train minus val and scored on val; the best is refitted on all of train and reported on test.
    """

    mode: str = "linear"
    metric: str = "top1"  # top1 | mean_per_class (SimCLR/BYOL report it for Pets, Flowers, Caltech-101, Aircraft)
    val_fraction: float = 0.2
    lrs: List[float] = field(default_factory=lambda: [0.01, 0.03, 0.1])  # one rate for encoder and classifier
    weight_decays: List[float] = field(default_factory=lambda: [0.0, 1.0e-5, 1.0e-4])
    epochs: List[int] = field(default_factory=lambda: [10])
    batch_size: int = 256
    momentum: float = 0.9
    nesterov: bool = True
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])

    def validate(self) -> None:
        _choice("eval.transfer.mode", self.mode, TRANSFER_MODES)
        _choice("eval.transfer.metric", self.metric, TRANSFER_METRICS)
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"eval.transfer.val_fraction must be in (0, 1), got {self.val_fraction}")
        if not self.lrs or any(not 0 < v <= 1e4 for v in self.lrs):
            raise ConfigError(f"eval.transfer.lrs needs values in (0, 1e4], got {list(self.lrs)}")
        if not self.weight_decays or any(not 0 <= v <= 1 for v in self.weight_decays):
            raise ConfigError(f"eval.transfer.weight_decays needs values in [0, 1], got {list(self.weight_decays)}")
        if not self.epochs or any(not 1 <= v <= 100000 for v in self.epochs):
            raise ConfigError(f"eval.transfer.epochs needs values in 1..100000, got {list(self.epochs)}")
        if not 1 <= self.batch_size <= 1 << 20:
            raise ConfigError(f"eval.transfer.batch_size must be in 1..{1 << 20}, got {self.batch_size}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"eval.transfer.momentum must be in [0, 1), got {self.momentum}")
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError(f"eval.transfer.crop_scale must be [min, max] with 0 < min <= max <= 1, "
                              f"got {list(self.crop_scale)}")


@dataclass
class TapsEvalConfig:
    """Evaluation at every depth (Revisiting SSL Sec. 4.5, Fig. 5 and 7): probes on each named tap of the backbone.

    A tap with more than ``max_dims`` values is max-pooled with kernel = stride = ceil(sqrt(h w c / max_dims)) (the
    reference's ``pool_mode max``; 9000 in the paper). ``probes``: ``lbfgs`` (eval.linear's L-BFGS logistic regression,
    L2 chosen on a val split), ``mlp`` (one hidden layer of ``mlp_hidden`` ReLU units) and ``sgd`` (a linear layer),
    both trained with SGD on the cached features: momentum 0.9, lr ``sgd_lr * sgd_batch_size / 256``, x0.1 at
    ``sgd_milestones`` of ``sgd_epochs`` (the reference's 70 epochs, 30/50; its "paper quality" setting is 520 epochs,
    480/500). ``fractions``: the share of training labels used, class-balanced with ``seed`` (paper: 1, 0.1, 0.05).
    """

    max_dims: int = 9000
    probes: List[str] = field(default_factory=lambda: ["lbfgs"])
    fractions: List[float] = field(default_factory=lambda: [1.0])
    seed: int = 0
    names: Optional[List[str]] = None  # which taps (None: all of the backbone's)
    limit: Optional[int] = None  # probe on the first N images of each split only (pretraining still uses all)
    mlp_hidden: int = 1000
    sgd_epochs: int = 70
    sgd_milestones: List[int] = field(default_factory=lambda: [30, 50])
    sgd_batch_size: int = 512
    sgd_lr: float = 0.1
    sgd_weight_decay: float = 0.0

    def validate(self) -> None:
        _positive("eval.taps.max_dims", self.max_dims)
        if self.limit is not None:
            _positive("eval.taps.limit", self.limit)
        if not self.probes:
            raise ConfigError("eval.taps.probes needs at least one of lbfgs, mlp, sgd")
        for p in self.probes:
            _choice("eval.taps.probes", p, ("lbfgs", "mlp", "sgd"))
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"eval.taps.fractions needs values in (0, 1], got {list(self.fractions)}")
        _positive("eval.taps.mlp_hidden", self.mlp_hidden)
        _positive("eval.taps.sgd_epochs", self.sgd_epochs)
        _positive("eval.taps.sgd_batch_size", self.sgd_batch_size)
        _positive("eval.taps.sgd_lr", self.sgd_lr)
        if self.sgd_weight_decay < 0:
            raise ConfigError(f"eval.taps.sgd_weight_decay must be >= 0, got {self.sgd_weight_decay}")
        if list(self.sgd_milestones) != sorted(self.sgd_milestones) or any(m < 1 for m in self.sgd_milestones):
            raise ConfigError(
                f"eval.taps.sgd_milestones must be increasing epochs >= 1, got {list(self.sgd_milestones)}")


@dataclass
class EvalConfig:
    """Evaluation of a frozen backbone; images are centre-cropped by crop_ratio and resized to image_size."""

    image_size: Optional[int] = None  # None: the source size times crop_ratio
    crop_ratio: float = 1.0  # 0.875 gives ImageNet's resize-256 / centre-crop-224
    batch_size: int = 512
    # ViTs: the representation is the class tokens of the last N blocks (each through the final LayerNorm),
    # concatenated; 1 = the usual pre-logits class token, 4 = DINO's and SSLight's linear evaluation of ViT-Ti/S
    vit_last_blocks: int = 1
    linear: LinearEvalConfig = field(default_factory=LinearEvalConfig)
    knn: KNNEvalConfig = field(default_factory=KNNEvalConfig)
    finetune: FinetuneEvalConfig = field(default_factory=FinetuneEvalConfig)
    taps: TapsEvalConfig = field(default_factory=TapsEvalConfig)
    transfer: TransferEvalConfig = field(default_factory=TransferEvalConfig)

    def validate(self) -> None:
        if not 0 < self.crop_ratio <= 1:
            raise ConfigError(f"eval.crop_ratio must be in (0, 1], got {self.crop_ratio}")
        _positive("eval.batch_size", self.batch_size)
        _positive("eval.vit_last_blocks", self.vit_last_blocks)
        self.linear.validate()
        self.knn.validate()
        self.finetune.validate()
        self.transfer.validate()
        self.taps.validate()


@dataclass
class MonitorConfig:
    """Quality monitored during pretraining (:mod:`selfsup.engine.monitor`); needs labels, off on unlabelled data.

    ``online_linear`` trains a linear classifier on the detached backbone features of every step's large views (never a
    gradient into the backbone); ``knn_every_steps`` > 0 runs a kNN probe of the backbone on a fixed labelled subset
    every that many steps and at the end (0 = off).
    """

    online_linear: bool = True
    online_lr: float = 1e-3  # Adam, constant; the classifier standardises its input (non-affine BatchNorm)
    knn_every_steps: int = 0
    knn_k: int = 20
    knn_train_size: int = 10000  # memory bank: seeded subset of the labelled training images
    knn_test_size: int = 2000  # queries: seeded subset of the test split (else held-out training images)

    def validate(self) -> None:
        _positive("monitor.online_lr", self.online_lr)
        if self.knn_every_steps < 0:
            raise ConfigError(f"monitor.knn_every_steps must be >= 0 (0 = off), got {self.knn_every_steps}")
        _positive("monitor.knn_k", self.knn_k)
        _positive("monitor.knn_train_size", self.knn_train_size)
        _positive("monitor.knn_test_size", self.knn_test_size)


HANDCRAFTED_SALIENCY = ("rbd", "mr", "dsr", "mc")


@dataclass
class SaliencyConfig:
    """RELICv2's unsupervised saliency pipeline (:mod:`selfsup.saliency.fit`, Appendix B.2.1 and DeepUSPS):
    handcrafted maps -> per-method self-supervised refinement (stage 1) -> one fused network (stage 2) -> mask cache.

    The defaults are the papers' (RELICv2 B.2.1 for rounds, epochs, learning rates and batch; DeepUSPS for thresholds,
    beta^2, moving average and poly decay); the small recipes change them for their budget.
    """

    encoder: Optional[str] = None  # selfsup checkpoint or backbone file of model.*; None: random init (a baseline)
    methods: List[str] = field(default_factory=lambda: list(HANDCRAFTED_SALIENCY))
    fit_images: int = 2500  # a seeded random subset of the training split (RELICv2: 2500 ImageNet images)
    image_size: Optional[int] = None  # side the networks see (None: the data's image size)
    # first-round binarisation thresholds (DeepUSPS: RBD 0.25, DSR 0.23, MC 0.31; MR takes the 0.36 of HS, which
    # RELICv2 replaced by MR)
    first_thresholds: Dict[str, float] = field(
        default_factory=lambda: {"rbd": 0.25, "mr": 0.36, "dsr": 0.23, "mc": 0.31})
    threshold: float = 0.5  # binarisation of refined maps (rounds >= 2, fusion) and of predicted masks
    rounds: int = 3
    round_epochs: int = 25
    round_lr: float = 1e-5  # Adam; doubled every round (RELICv2 B.2.1)
    round_lr_growth: float = 2.0
    round_beta2: float = 1.0
    mva_momentum: float = 0.7  # MVA <- m * MVA + (1 - m) * smoothed prediction, every epoch
    smoothing: str = "guided"  # guided (edge-aware guided filter, in place of DeepUSPS's dense CRF) | none
    smooth_radius: int = 2
    smooth_eps: float = 1e-2
    fuse_epochs: int = 200
    fuse_lr: float = 1e-5
    fuse_beta2: float = 4.0
    batch_size: int = 10
    poly_power: float = 0.9  # lr * (1 - epoch / epochs) ** poly_power
    weight_decay: float = 0.0
    decoder_channels: int = 64
    workers: Optional[int] = None  # processes for the handcrafted maps (None: the CPU count)
    cache_size: Optional[int] = None  # side of the stored masks (None: the image size, at most 64)

    def validate(self) -> None:
        if not self.methods:
            raise ConfigError("saliency.methods needs at least one of " + ", ".join(HANDCRAFTED_SALIENCY))
        for m in self.methods:
            _choice("saliency.methods", m, HANDCRAFTED_SALIENCY)
            if m not in self.first_thresholds:
                raise ConfigError(f"saliency.first_thresholds has no value for method {m}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"saliency.methods lists a method twice: {list(self.methods)}")
        for k, v in self.first_thresholds.items():
            _choice("saliency.first_thresholds", k, HANDCRAFTED_SALIENCY)
            _unit(f"saliency.first_thresholds.{k}", v)
        _unit("saliency.threshold", self.threshold)
        _unit("saliency.mva_momentum", self.mva_momentum)
        _choice("saliency.smoothing", self.smoothing, ("guided", "none"))
        for key in ("fit_images", "rounds", "round_epochs", "fuse_epochs", "batch_size", "decoder_channels",
                    "round_lr", "fuse_lr", "round_lr_growth", "round_beta2", "fuse_beta2", "smooth_radius",
                    "smooth_eps"):
            _positive(f"saliency.{key}", getattr(self, key))
        for key in ("image_size", "workers", "cache_size"):
            if getattr(self, key) is not None:
                _positive(f"saliency.{key}", getattr(self, key))
        if self.poly_power < 0 or self.weight_decay < 0:
            raise ConfigError("saliency.poly_power and saliency.weight_decay must be >= 0")


@dataclass
class Config:
    """A whole run. ``method`` holds the method's own dataclass (see :data:`METHOD_ARGS`)."""

    name: str = "run"
    out: str = "runs/${name}"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    saliency: SaliencyConfig = field(default_factory=SaliencyConfig)

    def validate(self) -> "Config":
        _check_finite(self, "")
        if not 0 <= self.seed < 2**32:  # NumPy's and Lightning's seeding accept exactly this range
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")
        for part in (self.data, self.views, self.model, self.optim, self.train, self.eval, self.monitor, self.saliency):
            part.validate()
        if hasattr(self.method, "validate"):
            self.method.validate()
        return self


# --------------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------------

RECIPE_DIR_ENV = "SELFSUP_RECIPES"


def recipe_dirs() -> List[Path]:
    """Where recipe names are looked up: $SELFSUP_RECIPES, then the package's own ``selfsup/recipes/`` (package data:
    an installed wheel has every recipe)."""
    dirs = []
    if os.environ.get(RECIPE_DIR_ENV):
        dirs.append(Path(os.environ[RECIPE_DIR_ENV]))
    dirs.append(Path(__file__).resolve().parent / "recipes")
    return dirs


def list_presets() -> List[str]:
    """The evaluation presets: ``selfsup/recipes/eval/*.yaml`` of every recipe folder, as ``eval/<name>``."""
    names: Set[str] = set()
    for d in recipe_dirs():
        if (d / "eval").is_dir():
            names.update(f"eval/{p.stem}" for p in (d / "eval").glob("*.yaml"))
    return sorted(names)


def find_preset(name_or_path: str) -> Path:
    """An evaluation preset by path, by ``eval/<name>`` or by its bare name."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return find_recipe(name_or_path)
    name = name_or_path if name_or_path.startswith("eval/") else f"eval/{name_or_path}"
    for d in recipe_dirs():
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    hint = _did_you_mean(name, list_presets())
    raise ConfigError(f"unknown preset '{name_or_path}'{hint}; available: {', '.join(list_presets()) or 'none'}")


def list_recipes() -> List[str]:
    names: Set[str] = set()
    for d in recipe_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_recipe(name_or_path: str) -> Path:
    """A recipe by file path or by name (``relicv2_shapes`` finds ``selfsup/recipes/relicv2_shapes.yaml``)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"recipe file not found: {p}")
        return p
    for d in recipe_dirs():  # a name: a folder of that name in the working directory (a run's out) does not shadow it
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    if p.exists():
        raise ConfigError(f"recipe '{p}' is a folder, not a recipe file or a recipe name")
    hint = _did_you_mean(name_or_path, list_recipes())
    raise ConfigError(f"unknown recipe '{name_or_path}'{hint}; available: {', '.join(list_recipes()) or 'none'}")


def _load_yaml(path: Path) -> DictConfig:
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends: one line naming the file
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot parse recipe {path}: {msg}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"recipe {path} must be a mapping of options")
    return loaded


def _recipe_layers(path: Path, chain: Sequence[Path]) -> List[DictConfig]:
    """A recipe and the recipes it extends: ``base: other_recipe`` merges ``other_recipe`` first (recursively)."""
    if path.resolve() in chain:
        names = " -> ".join(p.stem for p in (*chain, path.resolve()))
        raise ConfigError(f"recipe {path} extends itself: {names}")
    loaded = _load_yaml(path)
    parent = loaded.pop("base", None)
    if parent is None:
        return [loaded]
    if not isinstance(parent, str):
        raise ConfigError(f"recipe {path}: 'base' must name another recipe, got {parent!r}")
    return [*_recipe_layers(find_recipe(parent), (*chain, path.resolve())), loaded]


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override '{item}' must look like key=value (e.g. optim.base_lr=0.1)")
        if item.endswith("=") or not item.partition("=")[2].strip():
            raise ConfigError(f"override '{item}' has no value; write {item.partition('=')[0]}=null to unset it")
    try:
        return OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"bad override: {_omega_msg(exc)}") from None


_SCHEMAS: Dict[Any, DictConfig] = {}


def _schema(method_name: str) -> DictConfig:
    """The structured schema of :class:`Config` with ``method_name``'s arguments, built once per method class (building
    it is most of a load's cost). ``OmegaConf.merge`` copies its first argument, so the cached schema never changes;
    ``_omega_msg`` and ``_culprit`` only read it."""
    key = METHOD_ARGS[method_name]
    if key not in _SCHEMAS:
        schema = OmegaConf.structured(Config)
        schema.method = OmegaConf.structured(key)
        _SCHEMAS[key] = schema
    return _SCHEMAS[key]


def load_config(recipe: Optional[str] = None, overrides: Sequence[str] = (), base: Optional[dict] = None,
                presets: Sequence[str] = ()) -> Config:
    """Defaults <- ``base`` (e.g. the config stored in a checkpoint) <- recipe <- presets <- overrides, typed and
    validated. A preset is a recipe too (usually one of ``selfsup/recipes/eval/``, named ``eval/<name>`` or by its bare
    name) layered after the main recipe: an evaluation protocol applied to any run."""
    layers: List[DictConfig] = []
    if base is not None:
        layers.append(OmegaConf.create(base))
    if recipe is not None:
        layers.extend(_recipe_layers(find_recipe(recipe), ()))
    for preset in presets:
        layers.extend(_recipe_layers(find_preset(preset), ()))
    layers.append(_parse_overrides(overrides))
    try:
        raw = _merge_layers(layers)
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        raise ConfigError(_culprit(overrides, exc)) from None

    method_name = OmegaConf.select(raw, "method.name", default="relicv2")
    if method_name not in METHOD_ARGS:
        hint = _did_you_mean(str(method_name), list(METHOD_ARGS))
        available = ", ".join(sorted(METHOD_ARGS)) or "none (no method is registered: import selfsup.methods first)"
        raise ConfigError(f"unknown method.name '{method_name}'{hint}; available: {available}")

    schema = _schema(method_name)
    try:
        merged = OmegaConf.merge(schema, raw)
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise ConfigError(_omega_msg(exc, schema)) from None
    except (TypeError, ValueError) as exc:  # e.g. a mapping where the schema has a list: OmegaConf raises TypeError
        raise ConfigError(_culprit(overrides, exc, schema)) from None
    assert isinstance(cfg, Config)
    return cfg.validate()


def _culprit(overrides: Sequence[str], exc: BaseException, schema: Optional[DictConfig] = None) -> str:
    """One line for a merge that failed with a plain TypeError/ValueError: the override that causes it, found by
    merging each alone (a recipe file's value otherwise)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    for item in overrides:
        try:
            layer = OmegaConf.from_dotlist([item])
            if schema is not None:
                OmegaConf.to_object(OmegaConf.merge(schema, layer))
            else:
                OmegaConf.merge(OmegaConf.create({}), layer)
        except (OmegaConfBaseException, TypeError, ValueError):
            key, _, value = item.partition("=")
            return f"bad value for '{key}': {value!r} does not fit the option's type ({text})"
    return f"bad value in the recipe: {text}"


def _merge_layers(layers: Sequence[DictConfig]) -> DictConfig:
    """Merge config layers in order. A layer that names a *different* ``method.name`` replaces the whole method block
    instead of merging into it (``method.name=swav`` over a DINO recipe drops DINO's arguments), so recipes can extend
    a recipe of another method and the command line can switch methods."""
    raw = OmegaConf.create({})
    for layer in layers:
        new, old = OmegaConf.select(layer, "method.name"), OmegaConf.select(raw, "method.name")
        if new is not None and old is not None and new != old:
            del raw["method"]
        raw = cast(DictConfig, OmegaConf.merge(raw, layer))  # a merge over a DictConfig is a DictConfig
    return raw


def to_dict(cfg: Any) -> dict:
    """A plain, YAML/checkpoint-safe dict of a config (nested dataclasses -> dicts, interpolations resolved)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), resolve=True)


# --------------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------------


def _omega_msg(exc: OmegaConfBaseException, schema: Optional[DictConfig] = None) -> str:
    key = getattr(exc, "full_key", None) or ""
    text = str(exc).splitlines()[0]
    if "Key" in type(exc).__name__ or "not in struct" in text or "Missing key" in text:
        if key:
            parent, _, leaf = key.rpartition(".")
            options: List[str] = []
            if schema is not None:
                node = OmegaConf.select(schema, parent) if parent else schema
                if isinstance(node, DictConfig):
                    options = [str(k) for k in node.keys()]
            return f"unknown option '{key}'{_did_you_mean(leaf, options, prefix=parent)}"
    if key:
        return f"bad value for '{key}': {text}"
    return text


def _did_you_mean(word: str, options: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    if not close:
        return ""
    return f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)"


def _choice(key: str, value: Any, options: Sequence[Any]) -> None:
    if value not in options:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, options))}; got '{value}'"
                          f"{_did_you_mean(str(value), [str(o) for o in options])}")


def _check_finite(obj: Any, key: str) -> None:
    """Every float anywhere in the config (lists included) is finite: ``nan`` and ``inf`` are never a setting (a time
    budget or schedule length is unlimited with ``null``, not ``inf``)."""
    if is_dataclass(obj):
        for f in fields(obj):
            _check_finite(getattr(obj, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _check_finite(v, key)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{key} must be a finite number, got {obj}")


def _positive(key: str, value: float) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def _unit(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key} must be in [0, 1], got {value}")


def dataclass_field_names(obj: Any) -> List[str]:
    return [f.name for f in fields(obj)] if is_dataclass(obj) else []
