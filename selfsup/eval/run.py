"""Evaluation drivers: load a frozen backbone (checkpoint, safetensors or random init), build the probe data, run a
protocol, and return a flat dict of results. Used by ``selfsup eval``, ``selfsup export``, the demo and the
benchmarks.

``selfsup eval <protocol>`` is :func:`prepare_eval` (the config, the context), :func:`run_protocol` (the registered
protocol of :mod:`selfsup.eval.protocols` on it) and :func:`keep_result` (the JSON at --out and in the run's
``evals/``)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from selfsup.config import Config, load_config
from selfsup.data.base import ImageDataset, collate
from selfsup.data.datasets import build_dataset
from selfsup.data.views import center_crop_resize, normalize, train_crop_flip_sampler
from selfsup.engine.checkpoint import load_backbone_state, load_backbone_weights
from selfsup.engine.devices import device_for
from selfsup.errors import CheckpointError, ConfigError
from selfsup.eval.features import extract_features
from selfsup.eval.linear import fit_logistic_lbfgs, linear_probe_sgd
from selfsup.eval.protocols import EvalContext, Protocol
from selfsup.methods.base import Method, backbone_input_size, representation_of
from selfsup.metrics.knn import knn_classify
from selfsup.models.registry import create_backbone
from selfsup.models.vit import LastBlocksTokens, ViTBackbone

log = logging.getLogger("selfsup.eval")


def config_for(checkpoint: Optional[str], recipe: Optional[str], overrides: Sequence[str],
               presets: Sequence[str] = ()) -> Config:
    """The run's config stored with the checkpoint (if any), then the recipe, the presets and the overrides."""
    base = None
    if checkpoint:
        _, config_yaml = load_backbone_state(checkpoint)
        if config_yaml:
            import yaml

            try:
                base = yaml.safe_load(config_yaml)
            except yaml.YAMLError as exc:
                raise CheckpointError(f"{checkpoint}: its stored config is not valid YAML "
                                      f"({str(exc).splitlines()[0]})") from None
            if base is not None and not isinstance(base, dict):
                raise CheckpointError(f"{checkpoint}: its stored config is not a mapping of options")
    if base is None and recipe is None and checkpoint:
        raise ConfigError(f"{checkpoint} carries no config; pass --recipe to say which backbone it is")
    return load_config(recipe, overrides, base=base, presets=presets)


def load_backbone(cfg: Config, checkpoint: Optional[str], representation: bool = True) -> nn.Module:
    """The backbone of ``cfg.model`` with the checkpoint's online-encoder weights (random init when None), built for
    the method's input size (:func:`~selfsup.methods.base.backbone_input_size`). With ``representation`` (what the
    probes read) it comes wrapped by the method's :meth:`~selfsup.methods.base.Method.wrap_representation` (Jigsaw/RPL:
    the average over 9 patches); without, it is the bare backbone (export)."""
    torch.manual_seed(cfg.seed)
    backbone = create_backbone(cfg.model, image_size=backbone_input_size(cfg))
    if checkpoint:
        load_backbone_weights(backbone, checkpoint, str(checkpoint), cfg.model)
    if not representation:
        return backbone
    if cfg.eval.vit_last_blocks > 1:
        if not isinstance(backbone, ViTBackbone):
            raise ConfigError(f"eval.vit_last_blocks={cfg.eval.vit_last_blocks} is for ViTs; "
                              f"model.backbone={cfg.model.backbone} is not one")
        return LastBlocksTokens(backbone, cfg.eval.vit_last_blocks)
    return representation_of(cfg, backbone)


def eval_size(cfg: Config, dataset: ImageDataset) -> int:
    return cfg.eval.image_size or max(1, round(dataset.image_size * cfg.eval.crop_ratio))


@dataclass
class ProbeData:
    train: ImageDataset
    test: ImageDataset
    size: int

    @property
    def num_classes(self) -> int:
        """The train split's class count (:func:`probe_data` refuses a dataset without labels)."""
        if self.train.num_classes is None:
            raise ConfigError("the probe's train split has no labels; probes need a labelled dataset")
        return self.train.num_classes

    def preprocess(self, cfg: Config):
        mean, std, size, ratio = self.train.mean, self.train.std, self.size, cfg.eval.crop_ratio

        def fn(images: torch.Tensor) -> torch.Tensor:
            return normalize(center_crop_resize(images, ratio, size), mean, std)

        return fn


def probe_data(cfg: Config) -> ProbeData:
    train, test = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "test")
    if train.num_classes is None:
        raise ConfigError(f"data.dataset={cfg.data.dataset} has no labels; probes need a labelled dataset")
    check_probe_labels(cfg, train, test)
    return ProbeData(train=train, test=test, size=eval_size(cfg, train))


def check_probe_labels(cfg: Config, train: ImageDataset, test: ImageDataset) -> None:
    """A classification probe needs at least two classes in the train split (with one, every prediction is that class
    and any accuracy is meaningless) and a labelled test split. Test classes that the train split has no image of
    (a ``data.limit`` that cuts classes off) are warned about, not refused: the score is still the true score."""
    from selfsup.errors import DataError

    def where(ds: ImageDataset) -> str:
        folder = getattr(ds, "directory", None)
        return f"data.dataset={cfg.data.dataset}" + (f" ({folder})" if folder is not None else "")

    ytr, yte = torch.as_tensor(train.labels).long(), torch.as_tensor(test.labels).long()
    present = torch.unique(ytr[ytr >= 0])
    if present.numel() < 2:
        raise DataError(f"{where(train)}: the train split has {present.numel()} labelled class"
                        f"{'' if present.numel() == 1 else 'es'}; a classification probe needs at least 2")
    if bool((yte < 0).any()):
        raise DataError(f"{where(test)}: the test split has unlabelled images (no class folders); a probe needs "
                        "a labelled test split")
    absent = sorted(set(torch.unique(yte).tolist()) - set(present.tolist()))
    if absent:
        names = getattr(train, "class_names", None) or []
        shown = [names[c] if c < len(names) else str(c) for c in absent[:5]]
        log.warning("%s: the test split has images of class(es) %s that the train split has none of (data.limit "
                    "or a small label fraction?); the probe can never predict them", where(test), ", ".join(shown))


def features(cfg: Config, backbone: nn.Module, data: ProbeData, progress: bool = True
             ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    dev = device_for(cfg)
    backbone = backbone.to(dev)
    pre = data.preprocess(cfg)
    kw = dict(preprocess=pre, batch_size=cfg.eval.batch_size, device=dev, collate_fn=collate, progress=progress)
    xtr, ytr = extract_features(backbone, data.train, desc="train features", **kw)
    xte, yte = extract_features(backbone, data.test, desc="test features", **kw)
    return xtr, ytr, xte, yte


def run_linear(cfg: Config, backbone: nn.Module, data: Optional[ProbeData] = None, progress: bool = True,
               feats=None) -> Dict[str, Any]:
    """The linear probe of ``cfg.eval.linear.protocol``: L-BFGS on cached features (A6) or the SGD protocol (D.1)."""
    data = data or probe_data(cfg)
    lc = cfg.eval.linear
    if lc.protocol == "lbfgs":
        xtr, ytr, xte, yte = feats if feats is not None else features(cfg, backbone, data, progress)
        res = fit_logistic_lbfgs(xtr, ytr, xte, yte, num_classes=data.num_classes, l2_grid=lc.l2_grid,
                                 val_fraction=lc.val_fraction, max_iter=lc.max_iter, seed=cfg.seed,
                                 device=device_for(cfg))
        return {"protocol": "lbfgs", "top1": res["top1"], "top5": res["top5"], "l2": res["l2"],
                "num_features": int(xtr.shape[1])}
    dev = device_for(cfg)
    crop = train_crop_flip_sampler(data.size, tuple(lc.crop_scale), data.train.mean, data.train.std)

    def train_transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return crop.sample(images, None, generator).large[0]

    res = linear_probe_sgd(backbone.to(dev), data.train, data.test, train_transform=train_transform,
                           test_transform=data.preprocess(cfg), num_classes=data.num_classes, cfg=lc,
                           device=dev, seed=cfg.seed, collate_fn=collate, progress=progress)
    return {"protocol": "sgd", "top1": res["top1"], "top5": res["top5"], "epochs": res["epochs"]}


def run_knn(cfg: Config, backbone: nn.Module, data: Optional[ProbeData] = None, progress: bool = True,
            feats=None) -> Dict[str, float]:
    """Weighted kNN on cosine similarity for every k in ``cfg.eval.knn.k``."""
    data = data or probe_data(cfg)
    xtr, ytr, xte, yte = feats if feats is not None else features(cfg, backbone, data, progress)
    out: Dict[str, float] = {"num_features": int(xtr.shape[1])}
    for k in cfg.eval.knn.k:
        if k > xtr.shape[0]:
            log.warning("eval.knn.k=%d is above the %d training images: k=%d votes with all %d", k, xtr.shape[0], k,
                        xtr.shape[0])
            out[f"k{k}_clamped_to"] = int(xtr.shape[0])
        res = knn_classify(xtr, ytr, xte, yte, k=k, temperature=cfg.eval.knn.temperature,
                           num_classes=data.num_classes)
        out[f"k{k}_top1"], out[f"k{k}_top5"] = res["top1"], res["top5"]
    return out


def run_finetune(cfg: Config, checkpoint: Optional[str], progress: bool = True,
                 data: Optional[ProbeData] = None) -> Dict[str, Any]:
    """Fine-tune the pretrained encoder (``checkpoint``; random init when None: the supervised baseline) with a new
    linear classifier on a class-balanced ``eval.finetune.labels`` fraction of the training labels, drawn with
    ``eval.finetune.subset_seed`` and saved in (or read from) ``eval.finetune.subset_dir``; report on the test split.
    See :mod:`selfsup.eval.finetune` for the protocols."""
    from torch.utils.data import Dataset, Subset

    from selfsup.data.subsets import dataset_identity, subset_for
    from selfsup.eval.finetune import Trunk, finetune, head_prefix, pretrained_head

    fc = cfg.eval.finetune
    data = data or probe_data(cfg)
    # the weights first: a checkpoint that does not fit is refused before any file is written
    if fc.head == "projector":
        method = load_method(cfg, checkpoint)
        trunk = Trunk(method.backbone, head_prefix(pretrained_head(method), fc.head_layers))
    else:
        trunk = Trunk(load_backbone(cfg, checkpoint))
    labels = data.train.labels
    subset_path = None
    if fc.labels < 1:
        identity = dataset_identity(cfg.data.dataset, "train", labels, data.train.num_classes)
        indices, subset_path = subset_for(labels, identity, fc.labels, fc.subset_seed, Path(fc.subset_dir))
        train_ds: Dataset = Subset(data.train, indices.tolist())
    else:
        train_ds = data.train
    dev = device_for(cfg)
    crop = train_crop_flip_sampler(data.size, tuple(fc.crop_scale), data.train.mean, data.train.std)

    def train_transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return crop.sample(images, None, generator).large[0]

    res = finetune(trunk.to(dev), train_ds, data.test, train_transform=train_transform,
                   test_transform=data.preprocess(cfg), num_classes=data.num_classes, cfg=fc, device=dev,
                   seed=cfg.seed, collate_fn=collate, progress=progress)
    res.update(labels_fraction=fc.labels, subset_file=str(subset_path) if subset_path else None, head=fc.head)
    return res


def load_method(cfg: Config, checkpoint: Optional[str]) -> Method:
    """The whole pretraining method of ``cfg`` (backbone and heads) with the weights of a training checkpoint (a run
    folder or its ``last.ckpt``); random init when ``checkpoint`` is None."""
    from selfsup.engine.checkpoint import load_checkpoint
    from selfsup.methods.base import build_method

    torch.manual_seed(cfg.seed)
    method = build_method(cfg)
    if checkpoint:
        path = Path(checkpoint)
        if path.suffix == ".safetensors":
            raise ConfigError(f"{checkpoint} holds only the backbone; eval.finetune.head=projector needs the run's "
                              "last.ckpt (or its folder), which also holds the projector")
        state = load_checkpoint(path)["method"]
        try:
            method.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            raise CheckpointError(f"{checkpoint} does not fit method.name={cfg.method.name}: "
                                  f"{(first[1] if len(first) > 1 else first[0]).strip()[:200]}") from None
    return method


def export_backbone(checkpoint: str, fmt: str, out: Path, recipe: Optional[str] = None,
                    overrides: Sequence[str] = ()) -> Tuple[int, Dict[str, str]]:
    """``selfsup export``: the run's bare backbone written to ``out`` (a .safetensors file, checked before any work) in
    the key layout of ``fmt`` (:mod:`selfsup.models.export`); returns the number of tensors and the file's metadata."""
    from selfsup.metafiles import check_output_file
    from selfsup.models.export import export_state, save_export

    if out.suffix != ".safetensors":
        raise ConfigError(f"--out {out}: the export is a .safetensors file")
    check_output_file(out)
    cfg = config_for(checkpoint, recipe, overrides)
    backbone = load_backbone(cfg, checkpoint, representation=False)
    tensors, meta = export_state(backbone, fmt, width=cfg.model.width, image_size=backbone_input_size(cfg))
    meta.update(source=str(checkpoint), backbone=cfg.model.backbone)
    save_export(out, tensors, meta)
    return len(tensors), meta


def load_instructions(fmt: str, out: Path, meta: Dict[str, str]) -> str:
    """One line of Python (or a command) that loads an export written by :func:`export_backbone`."""
    load = "from safetensors.torch import load_file; sd = load_file(%r)" % str(out)
    if fmt == "timm":
        kwargs = meta["timm_kwargs"]
        extra = "" if kwargs == "{}" else ", **" + kwargs.replace("true", "True").replace("false", "False")
        return (f"import timm; {load}; m = timm.create_model({meta['timm_model']!r}, num_classes=0{extra}); "
                "m.load_state_dict(sd)")
    if fmt == "torchvision":
        return (f"import torchvision; {load}; m = torchvision.models.{meta['torchvision_model']}(weights=None); "
                "m.load_state_dict(sd, strict=False)  # only fc.* missing")
    return f"selfsup eval linear --checkpoint {out}"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def run_folder(checkpoint: Optional[str]) -> Optional[Path]:
    """The run folder a checkpoint belongs to (the folder itself, or the folder of its last.ckpt/backbone), if any."""
    if not checkpoint:
        return None
    p = Path(checkpoint)
    p = p if p.is_dir() else p.parent
    return p if (p / "train_log.csv").is_file() or (p / "last.ckpt").is_file() else None


def result_name(protocol: Protocol, cfg: Config, presets: Sequence[str] = ()) -> str:
    """The file name (without .json) of an evaluation in <run>/evals: protocol, setting, dataset."""
    parts = [protocol.name, *protocol.name_parts(cfg, presets), cfg.data.dataset]
    return "_".join(str(p).replace("/", "-").replace(".", "p") for p in parts)


def prepare_eval(protocol: Protocol, checkpoint: Optional[str], recipe: Optional[str], overrides: Sequence[str], *,
                 presets: Sequence[str] = (), out: Optional[str] = None, progress: bool = True,
                 options: Optional[Dict[str, Any]] = None) -> EvalContext:
    """The context of ``selfsup eval <protocol>``: --out checked before any work, the config of :func:`config_for`
    (``train.threads`` applied), the run folder the result is kept in. ``checkpoint`` None: a random-init backbone."""
    from selfsup.metafiles import check_output_file

    if out:
        check_output_file(Path(out))
    cfg = config_for(checkpoint, recipe, overrides, presets=presets)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    return EvalContext(cfg=cfg, checkpoint=checkpoint, source="random init" if checkpoint is None else checkpoint,
                       progress=progress, options=dict(options or {}), presets=list(presets),
                       out=Path(out) if out else None, run_dir=run_folder(checkpoint),
                       name=result_name(protocol, cfg, presets))


def run_protocol(protocol: Protocol, ctx: EvalContext) -> Dict[str, Any]:
    """Load the frozen representation when the protocol reads one (:attr:`Protocol.frozen`), then run it."""
    if protocol.frozen:
        ctx.backbone = load_backbone(ctx.cfg, ctx.checkpoint)
    return protocol.run(ctx)


def keep_result(protocol: Protocol, ctx: EvalContext, res: Dict[str, Any], command: str) -> dict:
    """Write the result (with the protocol, source, dataset, command and date) to --out and, for a run's checkpoint,
    to ``<run>/evals/<name>.json``, where ``selfsup report`` finds every evaluation of the run."""
    payload = {"protocol": protocol.name, "source": str(ctx.source), "dataset": ctx.cfg.data.dataset,
               "command": command, "date": time.strftime("%Y-%m-%d %H:%M"), **res}
    if ctx.out is not None:
        write_json(ctx.out, payload)
    if ctx.run_dir is not None:
        path = ctx.run_dir / "evals" / f"{ctx.name}.json"
        try:
            write_json(path, payload)
        except OSError as exc:
            logging.getLogger("selfsup").warning("could not keep the result in %s: %s", path, exc)
    return payload
