"""What the three training stages share: building networks and losses from config, the Trainer
(best epoch kept, resumable, one progress line per epoch), and logging to MLflow."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from pipeline.config import ConfigError, FinetuneConfig, InpainterConfig, NetworkTrainingConfig, RegistryConfig, SegmenterConfig
from pipeline.data.datamodule import OcclusionDataModule
from pipeline.data.dataset import MANIFEST, SplitFiles, resize_split, sha256_file
from pipeline.evaluation.report import save_grid, write_csv
from pipeline.losses.perceptual import VGG19Features
from pipeline.models.face_prior import EigenfacePrior
from pipeline.models.registry import create_model, list_models
from pipeline.models.checkpoint import file_md5
from pipeline.registry.tracking import checkpoint_tag, lightning_logger, log_artifact, log_metrics, set_tags
from pipeline.training.callbacks import AtomicCheckpointIO, EpochProgress
from pipeline.training.history import EpochHistory
from pipeline.training.precision import resolve_precision

logger = logging.getLogger(__name__)


def network_kwargs(arch: str, arch_kwargs: dict[str, Any], pretrained: bool, section: str) -> dict[str, Any]:
    """arch_kwargs plus `pretrained` for architectures that take it; refused for those that cannot."""
    entry = next((e for e in list_models() if e.name == arch), None)
    accepts = entry is not None and "pretrained" in inspect.signature(entry.builder).parameters
    if pretrained and entry is not None and not accepts and not _accepts_var_kwargs(entry.builder):
        raise ConfigError(f"params.yaml: {section}.pretrained is true but '{arch}' has no pretrained weights")
    return {**arch_kwargs, "pretrained": pretrained} if pretrained or accepts else dict(arch_kwargs)


def _accepts_var_kwargs(builder: Any) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())


def checkpoint_kwargs(net: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The arguments that rebuild a trained network from its checkpoint: never `pretrained` (the
    trained weights replace the ImageNet ones, whose file need not exist where it is loaded), but
    a stem frozen because it was pretrained stays frozen (TraResNet)."""
    rebuilt = dict(kwargs)
    if rebuilt.get("pretrained"):
        rebuilt["pretrained"] = False
        if any(getattr(module, "freeze_stem", False) for module in net.modules()):
            rebuilt["freeze_stem"] = True
    return rebuilt


def build_segmenter(section: SegmenterConfig) -> tuple[nn.Module, dict[str, Any]]:
    kwargs = network_kwargs(section.arch, section.arch_kwargs, section.pretrained, "segmenter")
    return create_model(section.arch, "segmenter", **kwargs), kwargs


def build_inpainter(section: InpainterConfig) -> tuple[nn.Module, dict[str, Any]]:
    kwargs = network_kwargs(section.arch, section.arch_kwargs, section.pretrained, "inpainter")
    return create_model(section.arch, "inpainter", **kwargs), kwargs


def fit_face_priors(net: nn.Module, train: SplitFiles, resolution: int, seed: int) -> None:
    """Fit each `EigenfacePrior` in `net` (hole_fill: eigenface) to the training split's clean faces
    at the training resolution, before the first step: it is part of the model, not learnt by gradients."""
    priors = [module for module in net.modules() if isinstance(module, EigenfacePrior)]
    if not priors:
        return
    faces = resize_split(train.select(0, len(train)), resolution).clean_image
    for prior in priors:
        prior.fit(faces, seed)
    logger.info("eigenface prior fitted to %d training faces (and their mirror images) at %d px", len(faces), resolution)


def build_feature_extractor(section: InpainterConfig, seed: int) -> VGG19Features | None:
    if section.perceptual_weights == "none":
        return None
    return VGG19Features(section.perceptual_layers, weights=section.perceptual_weights, seed=seed)


def effective_loss_weights(weights: dict[str, float], has_features: bool, has_discriminator: bool) -> dict[str, float]:
    """Drop the perceptual/style terms when no VGG19 is used, the adversarial one without a discriminator."""
    dropped = set()
    if not has_features:
        dropped |= {"perceptual", "style"}
    if not has_discriminator:
        dropped.add("adversarial")
    kept = {name: weight for name, weight in weights.items() if name not in dropped}
    if dropped & set(weights):
        logger.info("loss terms not used in this configuration: %s", sorted(dropped & set(weights)))
    return kept


# Under models/ but outside every stage's outputs: DVC neither removes it before a stage reruns nor
# takes a killed stage's checkpoints for a finished model.
RESUME_DIRECTORY = ".resume"
PRECISION_FILE = "precision"   # in a resume directory: the precision its run chose

# Lightning's messages that say nothing a user of this pipeline can act on: the loaders' worker
# count is a param, an epoch here may hold fewer batches than a logging interval, and a resume
# directory is non-empty by design.
LIGHTNING_NOISE = (".*does not have many workers", ".*log_every_n_steps", ".*exists and is not empty",
                   ".*that has Tensor Cores", ".*GPU available but not used", ".*isinstance\\(treespec, LeafSpec\\)",
                   ".*module\\(s\\) in eval mode")  # frozen by design: VGG19, the fine-tuned-on segmenter


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Lightning's device banners and tips (INFO) and its expected warnings off for one fit; its own
    warnings and errors still show."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [each.level for each in loggers]
    with warnings.catch_warnings():
        for message in LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=message)
        # deterministic="warn": name each op without a deterministic CUDA kernel once, not every step.
        warnings.filterwarnings("once", message=".*does not have a deterministic implementation")
        for each in loggers:
            each.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for each, level in zip(loggers, levels):
                each.setLevel(level)


@dataclass(frozen=True)
class TrainingHistory:
    """The per-epoch metrics of one training stage and which epoch's weights it kept."""

    rows: list[dict[str, float]]
    monitor: str                  # the metric the best epoch was chosen on, e.g. val_iou
    best_epoch: int               # START_EPOCH: no epoch beat the starting weights, which were kept
    resume_dir: Path              # Lightning's checkpoints, removed once the stage's outputs are written
    start: dict[str, float] | None = None   # the starting weights' validation metrics, when measured

    @property
    def best(self) -> dict[str, float]:
        if self.best_epoch == START_EPOCH and self.start is not None:
            return self.start
        return next(row for row in self.rows if int(row["epoch"]) == self.best_epoch)


START_EPOCH = -1


def improves(candidate: float, reference: float, mode: str) -> bool:
    """Whether `candidate` is strictly better than `reference` (NaN never is; anything beats NaN)."""
    if math.isnan(candidate):
        return False
    if math.isnan(reference):
        return True
    return candidate > reference if mode == "max" else candidate < reference


LOADER_SETTINGS = ("num_workers", "pin_memory", "cache_mb")   # how samples arrive, not which: no effect on training


def training_fingerprint(stage: str, section: NetworkTrainingConfig | FinetuneConfig, resolution: int, seed: int,
                         dataset: Path, determined_by: dict[str, Any], inputs: Sequence[Path]) -> str:
    """A hash of everything that decides what a training stage learns, so a resume never continues
    another configuration: the section (less its loader settings), resolution, seed, the dataset's
    manifest, any other settings the stage names, and the files it starts from."""
    settings = asdict(section)
    settings["trainer"] = {k: v for k, v in settings["trainer"].items() if k not in LOADER_SETTINGS}
    canonical = json.dumps({"stage": stage, "section": settings, "resolution": resolution, "seed": seed,
                            "manifest": sha256_file(dataset / MANIFEST), "determined_by": determined_by,
                            "inputs": [sha256_file(path) for path in inputs]}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def network_step(module: L.LightningModule, batch_size: int, resolution: int) -> Callable[[], None]:
    """One forward and backward pass of a copy of `module.net` on a random batch of the training shape
    (a mask hiding a third of each image for an inpainter), for `precision: auto` to time: the
    copy, made at the first call, keeps the network's normalisation statistics and the global random
    state untouched."""
    copies: list[nn.Module] = []
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(batch_size, 3, resolution, resolution, generator=generator)
    mask = torch.zeros(batch_size, 1, resolution, resolution)
    mask[..., resolution // 3: 2 * resolution // 3, :] = 1

    def step() -> None:
        if not copies:
            copies.append(copy.deepcopy(module.net).train())
        net = copies[0]
        inputs = (images,) if len(inspect.signature(net.forward).parameters) == 1 else (images, mask)
        with torch.random.fork_rng(devices=[]):
            net.zero_grad(set_to_none=True)
            net(*inputs).float().mean().backward()
    return step


def network_description(module: L.LightningModule, stage: str, batch_size: int, resolution: int) -> str:
    """What `network_step` times, for `precision: auto` to remember its choice by: the stage, the
    network's class and parameter shapes, the batch and the resolution."""
    shapes = [[name, list(parameter.shape), parameter.requires_grad] for name, parameter in module.net.named_parameters()]
    return json.dumps([stage, type(module.net).__name__, shapes, batch_size, resolution])


def fit(module: L.LightningModule, stage: str, section: NetworkTrainingConfig | FinetuneConfig, train: SplitFiles,
        val: SplitFiles, resolution: int, seed: int, registry: RegistryConfig, run_id: str, models_dir: Path,
        determined_by: dict[str, Any] | None = None, inputs: Sequence[Path] = (),
        callbacks: Sequence[L.Callback] = (), keep_start_unless_beaten: bool = False) -> TrainingHistory:
    """Train `module` for `section.epochs` at `resolution` on `section.trainer`'s hardware, logging each
    epoch to the MLflow run, and load the best epoch's weights (by `module.monitor`) back into it.

    Lightning's checkpoints (the best epoch and the last) go to `models_dir/.resume/<stage>-<fingerprint>/`,
    outside the stage's outputs; a run that finds a `last.ckpt` there resumes from it. They are
    removed by `log_training_outputs`, once the stage's outputs are written. `callbacks` join the
    stage's own (a trial's pruning callback). With `keep_start_unless_beaten` the starting weights are
    validated before the first step (on every start, so a resumed run compares with them too) and
    kept when no epoch beats them: fine-tuning never hands on a model worse on validation than it got."""
    fingerprint = training_fingerprint(stage, section, resolution, seed, train.root, determined_by or {}, inputs)
    resume_dir = models_dir / RESUME_DIRECTORY / f"{stage}-{fingerprint}"
    last = resume_dir / "last.ckpt"
    hardware = section.trainer
    # Timed only in one process: the processes of a distributed run must not pick different precisions.
    # A resumed run keeps the precision its first part trained in.
    single_process = hardware.devices in (1, "auto") and hardware.num_nodes == 1 and hardware.strategy in ("auto", "single_device")
    timed = single_process and isinstance(getattr(module, "net", None), nn.Module)
    chosen_file = resume_dir / PRECISION_FILE
    if last.is_file() and chosen_file.is_file():
        precision = chosen_file.read_text().strip()
    else:
        precision = resolve_precision(hardware.precision, hardware.accelerator,
                                      network_step(module, section.batch_size, resolution) if timed else None,
                                      network_description(module, stage, section.batch_size, resolution) if timed else None)
        resume_dir.mkdir(parents=True, exist_ok=True)
        chosen_file.write_text(precision)
    logger.info("%s: training in precision %s (trainer.precision %s)", stage, precision, hardware.precision)
    if mlflow.active_run() is not None:
        set_tags({f"{stage}.precision": precision})
    data = OcclusionDataModule(train, val, resolution, section.batch_size, seed, hardware.num_workers, hardware.pin_memory,
                               hardware.cache_mb * 2**20)
    history = EpochHistory()
    with quiet_lightning():
        best = ModelCheckpoint(dirpath=resume_dir, filename="best", monitor=module.monitor, mode=module.monitor_mode,
                               save_top_k=1, save_last=True, save_on_train_epoch_end=True,
                               auto_insert_metric_name=False, enable_version_counter=False)
        # "warn", not True: CUDA has no deterministic backward for bilinear upsampling (SOCLNET, IFACENET).
        placement = dict(precision=precision, accelerator=hardware.accelerator, devices=hardware.devices,
                         strategy=hardware.strategy, num_nodes=hardware.num_nodes, deterministic="warn")
        trainer = L.Trainer(
            max_epochs=section.epochs, limit_train_batches=section.batches_per_epoch or 1.0, **placement,
            logger=lightning_logger(registry, run_id), callbacks=[history, EpochProgress(stage, module.monitor), best, *callbacks],
            plugins=[AtomicCheckpointIO()], default_root_dir=resume_dir,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, log_every_n_steps=1,
        )
        start = None
        if keep_start_unless_beaten:
            start_state = copy.deepcopy(module.state_dict())
            # A trainer of its own: no logger, checkpoints or the stage's callbacks (a pruner, the history)
            # see this validation; the MLflow run gets the start's score once, as start_<monitor>.
            scorer = L.Trainer(**placement, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                               enable_model_summary=False)
            scores = scorer.validate(module, datamodule=data, verbose=False)[0]
            start = {"epoch": float(START_EPOCH), **{name.replace("/", "_"): float(value) for name, value in sorted(scores.items())}}
        if last.is_file():
            logger.info("%s: resuming from %s", stage, last)
        trainer.fit(module, datamodule=data, ckpt_path=last if last.is_file() else None)
    if not trainer.is_global_zero:
        # Another process of a distributed run (Lightning's launcher started it, or another node's
        # command): rank 0 keeps the best epoch, writes the stage's outputs and records them.
        raise SystemExit(0)
    # No best when the metric was never finite (NaN from the first epoch): keep the last epoch then.
    checkpoint = torch.load(best.best_model_path or last, map_location="cpu", weights_only=False)
    module.load_state_dict(checkpoint["state_dict"])
    result = TrainingHistory(history.rows, module.monitor.replace("/", "_"), int(checkpoint["epoch"]), resume_dir, start)
    if start is not None and not improves(result.best[result.monitor], start[result.monitor], module.monitor_mode):
        logger.info("%s: no epoch beat the starting weights (%s %.4g against the best epoch's %.4g): keeping them",
                    stage, result.monitor, start[result.monitor], result.best[result.monitor])
        module.load_state_dict(start_state)
        return TrainingHistory(history.rows, result.monitor, START_EPOCH, resume_dir, start)
    logger.info("%s: keeping epoch %d/%d (%s %.4g)", stage, result.best_epoch + 1, section.epochs, result.monitor,
                result.best[result.monitor])
    return result


def log_training_outputs(checkpoints: list[Path], history: TrainingHistory, history_path: Path,
                         grid_columns: list[torch.Tensor], grid_path: Path) -> dict[str, float]:
    """Write the history CSV and sample grid, log them, the checkpoints (each one's MD5 as a
    `checkpoint_md5.<name>` tag: the lineage `register` follows) and the kept (best) epoch's
    validation metrics to the active run, and drop the resume checkpoints: the stage's model is
    written. Returns those metrics."""
    write_csv(history.rows, history_path)
    save_grid(grid_columns, grid_path)
    set_tags({checkpoint_tag(path): file_md5(path) for path in checkpoints})
    for path in (*checkpoints, history_path, grid_path):
        log_artifact(path)
    final = {name: value for name, value in history.best.items() if name.startswith("val_")}
    final["best_epoch"] = float(history.best_epoch)
    if history.start is not None:
        final[f"start_{history.monitor}"] = history.start[history.monitor]
    log_metrics({f"final_{name}": value for name, value in final.items()})
    shutil.rmtree(history.resume_dir, ignore_errors=True)
    with suppress(OSError):
        history.resume_dir.parent.rmdir()  # only when no other stage's checkpoints are there
    return final
