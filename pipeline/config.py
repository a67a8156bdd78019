"""params.yaml -> frozen typed dataclasses. The only module that reads YAML or the environment."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.errors import DeoccludeError

PARAMS_FILE = "params.yaml"
# params.yaml with the active profile merged in: what DVC tracks per stage, key by key, so a stage
# reruns when a value it reads changes under whichever profile set it (written by resolve_params).
RESOLVED_PARAMS_FILE = "params.resolved.yaml"
# Set by `deocclude run` / `deocclude repro` for the stage processes DVC starts: their MLflow runs
# nest under the execution's parent run.
PARENT_RUN_ENV = "DEOCCLUDE_PARENT_RUN_ID"
# The hpo stage's result: the best trial's loss weights, merged over inpainter.loss_weights when hpo.apply.
TUNED_PARAMS_FILE = "params.tuned.yaml"
# Where the Optuna study lives when not hpo.storage: a URL with a password belongs here, not in params.yaml.
OPTUNA_STORAGE_ENV = "DEOCCLUDE_OPTUNA_STORAGE"
OCCLUDER_TYPES = ("face_mask", "sunglasses", "hand", "hat", "cup", "strokes", "box")
SEGMENTER_LOSS_TERMS = ("bce", "dice")
INPAINTER_LOSS_TERMS = ("l1", "hole_l1", "valid_l1", "tv", "perceptual", "style", "adversarial")
EVALUATION_METRICS = ("l1", "psnr", "ssim", "l1_masked", "psnr_masked", "ssim_masked")
TOP_LEVEL_KEYS = ("profile", "profiles", "seed", "data", "validation", "drift", "segmenter", "inpainter", "finetune",
                  "evaluation", "registry", "promotion", "hpo", "remote", "reference")
# The DVC remote's settings a machine may set over params.yaml's `remote:` (the team stack's MinIO
# does); its credentials come only from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE or
# the AWS config files, which DVC's S3 client reads itself.
REMOTE_ENV = {"url": "DEOCCLUDE_REMOTE_URL", "endpoint_url": "DEOCCLUDE_REMOTE_ENDPOINT_URL",
              "region": "DEOCCLUDE_REMOTE_REGION"}
# What a loss-weight search may optimise, and which way: the validation metrics the inpainter logs.
HPO_METRICS = {"val/loss": "minimize", "val/l1": "minimize", "val/hole_l1": "minimize",
               "val/psnr": "maximize", "val/psnr_masked": "maximize", "val/ssim": "maximize"}
HPO_PRUNERS = ("median", "none")
FLOOR_BASELINES = ("occluded_input", "telea", "telea_gt_mask")
# What `register` re-scores a champion against on the photograph set (Telea given the champion's masks).
PHOTOGRAPH_BASELINES = ("occluded_input", "telea")
# The groups a registered `deocclusion` version can be re-scored on (it holds the segmenter and the
# fine-tuned inpainter, not the inpainter before fine-tuning).
PROMOTABLE_GROUPS = ("end_to_end", "gt_mask")


class ConfigError(DeoccludeError, ValueError):
    """params.yaml is missing, malformed, or holds an invalid value."""


DATA_SOURCES = ("synthetic", "faces", "labelled", "masks")
RESIZE_MODES = ("crop", "resize")


@dataclass(frozen=True)
class IngestParams:
    """How the generate stage (and `deocclude data ingest`) turns a raw dataset into the manifest format."""

    resize: str = "crop"               # crop: centre square, then resize; resize: squash to a square
    max_pixels: int = 40_000_000       # an image whose header claims more is refused without decoding
    duplicate_distance: int = 12       # perceptual-hash bits (of 256) within which two images are one
    landmark_mask_share: float = 0.5   # faces with landmarks: share given paper 002's landmark-placed mask
    cutout_share: float = 0.5          # faces with a cutouts/ folder: share given an RGBA cut-out


@dataclass(frozen=True)
class DataConfig:
    count: int
    resolution: int
    splits: dict[str, float]
    mask_ratio_min: float
    mask_ratio_max: float
    occluders: dict[str, float]
    tag: str = ""                      # the dataset's human tag (its id is its DVC hash); empty: from source and size
    source: str = "synthetic"          # synthetic: rendered; faces / labelled / masks: ingested from `raw`
    raw: str = "data/raw"              # the raw dataset folder (a DVC dep of generate), relative to params.yaml
    ingest: IngestParams = IngestParams()


@dataclass(frozen=True)
class ValidationConfig:
    max_failing_examples: int = 5


DRIFT_ACTIONS = ("warn", "fail")
PREVIOUS_DATASET = "previous"   # drift.reference: the data/dataset version git HEAD's dvc.lock records


@dataclass(frozen=True)
class DriftConfig:
    """The drift stage: KS tests of the dataset against a reference version (pipeline/data/drift.py)."""

    reference: str = ""                # dataset folder with manifest.csv (relative to params.yaml) | previous | empty: none
    on_drift: str = "warn"             # warn: a WARNING and exit 0; fail: the stage exits non-zero, nothing downstream runs
    p_value: float | None = 0.01       # a feature drifts below it, Bonferroni-corrected within its group; None: D alone decides
    statistic: float | None = None     # when set, its KS statistic D must also reach this
    sample: int = 500                  # images per side at most, drawn with the seed


@dataclass(frozen=True)
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    schedule: str = "constant"         # per step: constant | onecycle (warm-up to lr, then anneal) | cosine
    warmup: float = 0.15               # onecycle: the share of the steps spent warming up


SCHEDULES = ("constant", "onecycle", "cosine")
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "16-mixed", "bf16-true")


@dataclass(frozen=True)
class TrainerConfig:
    """How Lightning runs one training section: hardware, numerics and data loading."""

    precision: str = "32"              # "bf16-mixed": autocast, fp32 weights (CPUs with AVX-512 bf16, GPUs);
                                       # "auto": bf16-mixed on a bf16 GPU, or on a CPU with AVX-512 BF16 / AMX
                                       # where the network's step times faster in it; else "32"
    accelerator: str = "auto"          # cpu | gpu | auto
    devices: int | str = 1
    strategy: str = "auto"             # e.g. ddp for several devices or nodes
    num_nodes: int = 1
    num_workers: int = 0               # DataLoader worker processes
    pin_memory: bool = False           # page-locked batches for faster host-to-GPU copies
    cache_mb: int = 1024               # MiB of decoded pixels (8 bytes a pixel) the train and val splits may hold
                                       # in memory, decoded once instead of every epoch; 0: decode as drawn


@dataclass(frozen=True)
class NetworkTrainingConfig:
    """What every trained network's section holds."""

    arch: str
    arch_kwargs: dict[str, Any]
    epochs: int
    batch_size: int
    optimizer: OptimizerConfig
    loss_weights: dict[str, float]
    trainer: TrainerConfig = TrainerConfig()
    resolution: int | None = None      # training resolution; None trains at data.resolution
    pretrained: bool = False
    hflip: bool = False                # flip a random half of each training batch left-right
    batches_per_epoch: int | None = None   # train this many batches of each (shuffled) epoch; None: the whole split


@dataclass(frozen=True)
class SegmenterConfig(NetworkTrainingConfig):
    threshold: float = 0.5
    opening_kernel: int = 0            # > 1: erosion then dilation of the predicted mask (paper 003: 7)
    test_time_flip: bool = False       # average the occluder probability with the mirror image's (two passes)


@dataclass(frozen=True)
class DiscriminatorConfig:
    arch: str
    arch_kwargs: dict[str, Any]
    lr_scale: float = 1.0     # its learning rate as a multiple of the generator's (paper 004: 0.1)


@dataclass(frozen=True)
class InpainterConfig(NetworkTrainingConfig):
    perceptual_fallback: str = "random"   # VGG19 for the perceptual/style terms when not pretrained: random | none
    perceptual_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    discriminator: DiscriminatorConfig | None = None
    adversarial_loss: str = "bce"

    @property
    def perceptual_weights(self) -> str:
        """Which VGG19 the perceptual and style terms use: imagenet, random, or none."""
        return "imagenet" if self.pretrained else self.perceptual_fallback


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int
    batch_size: int
    optimizer: OptimizerConfig
    loss_weights: dict[str, float] | None = None   # None: the inpainter's
    trainer: TrainerConfig = TrainerConfig()
    hflip: bool = False
    batches_per_epoch: int | None = None   # as in NetworkTrainingConfig
    keep_if_no_gain: bool = True   # validate the trained inpainter first; keep it when no epoch beats it


@dataclass(frozen=True)
class EvaluationConfig:
    grid_samples: int
    mask_ratio_bins: tuple[float, ...]
    telea_radius: int = 3
    batch_size: int = 32               # images per forward pass: bounds memory at the papers' resolutions
    device: str = "auto"               # auto (cuda when available) | cpu | cuda | cuda:N
    cleanup_kernel: int = 7            # segmentation is also scored with this opening (paper 003's 7x7), and without
    lpips_net: str = "alex"            # LPIPS backbone: alex | vgg | squeeze (ImageNet weights from the torch cache)
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    latency_repeats: int = 5
    # Paper 004's progressive reconstruction (Algorithm 1), scored and timed beside one-shot inpainting.
    progressive: bool = False
    progressive_kernel: int = 15           # the dilation's kernel, odd (the paper's 15 at 256 px)
    progressive_min_hole_ratio: float = 0.2   # stop once the hole covers less of the image
    progressive_max_steps: int = 10        # predictions per image at most
    # Paper 001's synthetic same-identity test (pipeline/evaluation/same_identity.py): plain inpainting
    # against latent optimisation without and with the references' prior (reference: settings).
    same_identity_people: int = 2          # people rendered, one occluded image each; 0: no test
    same_identity_references: int = 3      # clean views of each person as references
    # Adam steps per image; None: reference.steps. Fewer than `deocclude predict` takes: each is a forward
    # and backward pass per image and method, and the quick profile's evaluation stays within minutes.
    same_identity_steps: int | None = 20


@dataclass(frozen=True)
class RegistryConfig:
    tracking_uri: str
    artifact_root: Path | None
    experiment: str
    promote_metric: str
    promote_greater_is_better: bool = True
    parent_run_id: str | None = None   # the pipeline execution's MLflow run, from DEOCCLUDE_PARENT_RUN_ID


@dataclass(frozen=True)
class PromotionConfig:
    """The gate `register` applies before a version may become `champion`."""

    floor_baselines: tuple[str, ...] = ("occluded_input", "telea")
    floor_metrics: tuple[str, ...] = EVALUATION_METRICS
    min_improvement: float = 0.0       # the interval's lower bound must exceed it, in the primary metric's unit
    photograph_min_iou: float | None = None    # the photograph set's mean mask IoU must reach it; None: not checked
    photograph_baselines: tuple[str, ...] = ()
    photograph_metrics: tuple[str, ...] = ()
    bootstrap_resamples: int = 2000
    confidence: float = 0.95
    bootstrap_seed: int = 0


@dataclass(frozen=True)
class HpoConfig:
    """Paper 000's loss-weight search: random trials, then TPE, each training the inpainter."""

    random_trials: int = 0
    tpe_trials: int = 0
    terms: tuple[str, ...] = ("l1", "perceptual", "style", "adversarial")
    low: float = 1.0
    high: float = 10.0
    step: float = 0.1
    metric: str = "val/psnr_masked"
    pruner: str = "median"
    pruner_startup_trials: int = 5      # trials finished before the median means anything
    pruner_warmup_epochs: int = 1       # epochs a trial trains before it can be pruned
    study: str = "inpainter-loss-weights"
    storage: str = "sqlite:///optuna.db"   # OPTUNA_STORAGE_ENV overrides; relative sqlite paths resolve against params.yaml
    heartbeat_seconds: int = 60         # a trial silent for twice this long is failed and queued again
    max_retries: int = 3                # times a failed or abandoned trial is queued again
    apply: bool = True                  # train_inpainter and finetune use params.tuned.yaml's weights

    @property
    def trials(self) -> int:
        return self.random_trials + self.tpe_trials

    @property
    def direction(self) -> str:
        return HPO_METRICS[self.metric]


@dataclass(frozen=True)
class ReferenceConfig:
    """Reference-guided de-occlusion (paper 001, adapted; pipeline/reference.py): the inpainter's
    latent of the occluded face optimised towards its K clean references' latents."""

    steps: int = 100                   # Adam steps per image
    lr: float = 0.01                   # paper 001: Adam, 0.01; here relative to the latent's RMS
    sigma: float = 0.25                # the Gaussians' sigma, in units of the latent's per-element RMS distance
    prior_region: str = "hidden"       # hidden: the prior on the latent's cells under the occluder | whole
    k: float = 0.25                    # eq. 7's scale, per occluded percentage point
    x0: float = 30.0                   # eq. 7's shift: the occluded percentage where the prior weighs 1
    reconstruction_weight: float = 1.0  # lambda_1: the visible pixels (paper: fixed to 1)
    perceptual_weight: float = 0.1     # lambda_2
    discriminator_weight: float = 0.0  # lambda_4 (paper 001 tuned 0.1 for prior_disc); only where a discriminator ships
    pretrained: bool = False           # ImageNet VGG19 for the perceptual term, from the torch cache only
    perceptual_fallback: str = "random"   # without it: random (seeded, untrained VGG19) | none (term dropped)
    perceptual_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1")

    @property
    def perceptual_weights(self) -> str:
        """Which VGG19 the perceptual term uses: imagenet, random, or none."""
        return "imagenet" if self.pretrained else self.perceptual_fallback


@dataclass(frozen=True)
class RemoteConfig:
    """The DVC remote the team shares data and models through: S3, or MinIO through endpoint_url.
    The fields are params.yaml's (shared through the committed .dvc/config); `overrides` holds what
    DEOCCLUDE_REMOTE_* set over them on this machine (.dvc/config.local)."""

    name: str = "storage"
    url: str = ""                       # s3://bucket/prefix; empty: no remote
    endpoint_url: str = ""              # empty: AWS; MinIO: http://host:9000
    region: str = ""                    # empty: the AWS config's (or the SDK's default)
    overrides: dict[str, str] = field(default_factory=dict)

    def in_use(self) -> RemoteConfig:
        """The remote this machine pushes to: params.yaml's fields with the environment's over them."""
        return replace(self, **self.overrides, overrides={})


@dataclass(frozen=True)
class Config:
    root: Path
    profile: str
    seed: int
    data: DataConfig
    validation: ValidationConfig
    segmenter: SegmenterConfig
    inpainter: InpainterConfig
    finetune: FinetuneConfig
    evaluation: EvaluationConfig
    registry: RegistryConfig
    promotion: PromotionConfig = PromotionConfig()
    hpo: HpoConfig = HpoConfig()
    tuned_loss_weights: dict[str, float] = field(default_factory=dict)   # from params.tuned.yaml, applied to the inpainter
    remote: RemoteConfig = RemoteConfig()
    drift: DriftConfig = DriftConfig()
    reference: ReferenceConfig = ReferenceConfig()
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def params_hash(self) -> str:
        """sha256 of the canonical JSON of params.yaml and of the tuned loss weights applied from
        params.tuned.yaml: the same params give the same hash."""
        # Where the data are shared (remote:) says nothing about what a model was trained on.
        raw = {key: value for key, value in self.raw.items() if key != "remote"}
        payload = {**raw, TUNED_PARAMS_FILE: self.tuned_loss_weights} if self.tuned_loss_weights else raw
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _section(raw: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: section '{name}' is missing or not a mapping")
    return value


# Mappings a profile replaces whole: one architecture's arguments mean nothing to another, and a
# loss is the set of terms named, not a union with the base's.
REPLACED_WHOLE = ("arch_kwargs", "loss_weights")


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge a profile into the base params, but for the REPLACED_WHOLE mappings."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key not in REPLACED_WHOLE:
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_optimizer(values: dict[str, Any], section: str, source: Path) -> dict[str, Any]:
    """The section with its `optimizer` and `trainer` mappings built into their dataclasses."""
    values = dict(values)
    optimizer = dict(values.get("optimizer") or {})
    if "betas" in optimizer:
        optimizer["betas"] = tuple(optimizer["betas"])
    values["optimizer"] = _build(OptimizerConfig, optimizer, f"{section}.optimizer", source)
    trainer = dict(values.get("trainer") or {})
    if "precision" in trainer:
        trainer["precision"] = str(trainer["precision"])
    values["trainer"] = _build(TrainerConfig, trainer, f"{section}.trainer", source)
    return values


def _build(cls: type, values: dict[str, Any], section: str, source: Path) -> Any:
    known = {f.name for f in cls.__dataclass_fields__.values()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in '{section}': {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{source}: section '{section}': {error}") from None


def _require(condition: bool, source: Path, message: str) -> None:
    if not condition:
        raise ConfigError(f"{source}: {message}")


def _check(cfg: Config, source: Path) -> None:
    d = cfg.data
    _require(d.count >= 3, source, f"data.count must be >= 3 (one sample per split), got {d.count}")
    _require(d.resolution >= 16, source, f"data.resolution must be >= 16, got {d.resolution}")
    _require(set(d.splits) == {"train", "val", "test"}, source, f"data.splits must name train, val and test, got {sorted(d.splits)}")
    _require(all(v > 0 for v in d.splits.values()), source, f"data.splits fractions must be > 0, got {d.splits}")
    _require(abs(sum(d.splits.values()) - 1.0) < 1e-6, source, f"data.splits must sum to 1, got {sum(d.splits.values())}")
    _require(0 < d.mask_ratio_min < d.mask_ratio_max < 1, source,
             f"data.mask_ratio_min/max must satisfy 0 < min < max < 1, got {d.mask_ratio_min}, {d.mask_ratio_max}")
    _require(d.source in DATA_SOURCES, source, f"data.source must be one of {list(DATA_SOURCES)}, got {d.source!r}")
    _require(d.ingest.resize in RESIZE_MODES, source, f"data.ingest.resize must be crop or resize, got {d.ingest.resize!r}")
    _require(d.ingest.max_pixels >= d.resolution ** 2, source,
             f"data.ingest.max_pixels must be >= data.resolution squared, got {d.ingest.max_pixels}")
    _require(0 <= d.ingest.duplicate_distance <= 64, source,
             f"data.ingest.duplicate_distance must be 0..64 bits (of 256), got {d.ingest.duplicate_distance}")
    for share in ("landmark_mask_share", "cutout_share"):
        value = getattr(d.ingest, share)
        _require(0 <= value <= 1, source, f"data.ingest.{share} must be in [0, 1], got {value}")
    unknown = sorted(set(d.occluders) - set(OCCLUDER_TYPES))
    _require(not unknown, source, f"data.occluders: unknown type(s) {unknown}; known: {list(OCCLUDER_TYPES)}")
    _require(sum(d.occluders.values()) > 0 and all(v >= 0 for v in d.occluders.values()), source,
             "data.occluders weights must be >= 0 with a positive sum")
    for name in ("segmenter", "inpainter", "finetune"):
        section = getattr(cfg, name)
        _require(section.optimizer.lr > 0, source, f"{name}.optimizer.lr must be > 0, got {section.optimizer.lr}")
        _require(section.optimizer.name in ("adam", "sgd"), source,
                 f"{name}.optimizer.name must be adam or sgd, got {section.optimizer.name!r}")
        _require(section.optimizer.schedule in SCHEDULES, source,
                 f"{name}.optimizer.schedule must be one of {list(SCHEDULES)}, got {section.optimizer.schedule!r}")
        _require(0 < section.optimizer.warmup < 1, source,
                 f"{name}.optimizer.warmup must be in (0, 1), got {section.optimizer.warmup}")
        _require(section.epochs >= 1, source, f"{name}.epochs must be >= 1, got {section.epochs}")
        _require(section.batch_size >= 1, source, f"{name}.batch_size must be >= 1, got {section.batch_size}")
        batches = section.batches_per_epoch
        _require(batches is None or (isinstance(batches, int) and not isinstance(batches, bool) and batches >= 1), source,
                 f"{name}.batches_per_epoch must be null or an integer >= 1, got {batches!r}")
        trainer = section.trainer
        _require(trainer.precision in PRECISIONS, source,
                 f"{name}.trainer.precision must be one of {list(PRECISIONS)}, got {trainer.precision!r}")
        _require(trainer.accelerator in ("auto", "cpu", "gpu", "cuda", "mps"), source,
                 f"{name}.trainer.accelerator must be auto, cpu, gpu, cuda or mps, got {trainer.accelerator!r}")
        _require(trainer.devices == "auto" or (isinstance(trainer.devices, int) and trainer.devices >= 1), source,
                 f"{name}.trainer.devices must be an integer >= 1 or 'auto', got {trainer.devices!r}")
        _require(trainer.num_nodes >= 1, source, f"{name}.trainer.num_nodes must be >= 1, got {trainer.num_nodes}")
        _require(trainer.num_workers >= 0, source, f"{name}.trainer.num_workers must be >= 0, got {trainer.num_workers}")
        _require(trainer.cache_mb >= 0, source, f"{name}.trainer.cache_mb must be >= 0, got {trainer.cache_mb}")
    _require(0 < cfg.segmenter.threshold < 1, source, f"segmenter.threshold must be in (0, 1), got {cfg.segmenter.threshold}")
    _require(cfg.inpainter.perceptual_fallback in ("random", "none"), source,
             f"inpainter.perceptual_fallback must be random or none, got {cfg.inpainter.perceptual_fallback!r}")
    if cfg.inpainter.discriminator is not None:
        _require(cfg.inpainter.discriminator.lr_scale > 0, source,
                 f"inpainter.discriminator.lr_scale must be > 0, got {cfg.inpainter.discriminator.lr_scale}")
    _require(cfg.inpainter.adversarial_loss in ("bce", "hinge"), source,
             f"inpainter.adversarial_loss must be bce or hinge, got {cfg.inpainter.adversarial_loss!r}")
    for name in ("segmenter", "inpainter"):
        resolution = getattr(cfg, name).resolution
        _require(resolution is None or resolution >= 16, source, f"{name}.resolution must be >= 16 or null, got {resolution}")
    bins = cfg.evaluation.mask_ratio_bins
    _require(len(bins) >= 2 and all(a < b for a, b in zip(bins, bins[1:])) and 0 <= bins[0] and bins[-1] <= 1, source,
             f"evaluation.mask_ratio_bins must be >= 2 strictly increasing edges in [0, 1], got {list(bins)}")
    _require(cfg.evaluation.grid_samples >= 1, source, f"evaluation.grid_samples must be >= 1, got {cfg.evaluation.grid_samples}")
    _require(cfg.evaluation.batch_size >= 1, source, f"evaluation.batch_size must be >= 1, got {cfg.evaluation.batch_size}")
    _require(cfg.evaluation.device in ("auto", "cpu") or cfg.evaluation.device.startswith("cuda"), source,
             f"evaluation.device must be auto, cpu, cuda or cuda:N, got {cfg.evaluation.device!r}")
    _require(cfg.evaluation.cleanup_kernel % 2 == 1, source,
             f"evaluation.cleanup_kernel must be odd, got {cfg.evaluation.cleanup_kernel}")
    _require(cfg.evaluation.lpips_net in ("alex", "vgg", "squeeze"), source,
             f"evaluation.lpips_net must be alex, vgg or squeeze, got {cfg.evaluation.lpips_net!r}")
    _require(bool(cfg.evaluation.latency_batch_sizes) and min(cfg.evaluation.latency_batch_sizes) >= 1
             and cfg.evaluation.latency_repeats >= 1, source,
             "evaluation.latency_batch_sizes must be sizes >= 1 and evaluation.latency_repeats >= 1")
    evaluation = cfg.evaluation
    _require(evaluation.progressive_kernel >= 3 and evaluation.progressive_kernel % 2 == 1, source,
             f"evaluation.progressive_kernel must be odd and >= 3, got {evaluation.progressive_kernel}")
    _require(0 <= evaluation.progressive_min_hole_ratio < 1, source,
             f"evaluation.progressive_min_hole_ratio must be in [0, 1), got {evaluation.progressive_min_hole_ratio}")
    _require(evaluation.progressive_max_steps >= 1, source,
             f"evaluation.progressive_max_steps must be >= 1, got {evaluation.progressive_max_steps}")
    _require(cfg.evaluation.telea_radius >= 1, source, f"evaluation.telea_radius must be >= 1, got {cfg.evaluation.telea_radius}")
    _check_same_identity(evaluation, source)
    _require(cfg.validation.max_failing_examples >= 1, source,
             f"validation.max_failing_examples must be >= 1, got {cfg.validation.max_failing_examples}")
    for section, switch in (("segmenter", "pretrained"), ("segmenter", "hflip"), ("segmenter", "test_time_flip"),
                            ("inpainter", "pretrained"), ("inpainter", "hflip"), ("finetune", "hflip"),
                            ("finetune", "keep_if_no_gain")):
        value = getattr(getattr(cfg, section), switch)
        _require(isinstance(value, bool), source, f"{section}.{switch} must be true or false, got {value!r}")
    kernel = cfg.segmenter.opening_kernel
    _require(kernel == 0 or (kernel > 1 and kernel % 2 == 1), source, f"segmenter.opening_kernel must be 0 or an odd number > 1, got {kernel}")
    for name, known in (("segmenter", SEGMENTER_LOSS_TERMS), ("inpainter", INPAINTER_LOSS_TERMS), ("finetune", INPAINTER_LOSS_TERMS)):
        weights = getattr(cfg, name).loss_weights or {}
        unknown = sorted(set(weights) - set(known))
        _require(not unknown, source, f"{name}.loss_weights: unknown term(s) {unknown}; known: {list(known)}")
    group, _, metric = cfg.registry.promote_metric.partition(".")
    _require(group in PROMOTABLE_GROUPS and metric in EVALUATION_METRICS, source,
             f"registry.promote_metric must be <group>.<metric> with group in {list(PROMOTABLE_GROUPS)} and metric in "
             f"{list(EVALUATION_METRICS)}, got {cfg.registry.promote_metric!r}")
    promotion = cfg.promotion
    unknown = sorted(set(promotion.floor_baselines) - set(FLOOR_BASELINES))
    _require(not unknown, source, f"promotion.floor_baselines: unknown baseline(s) {unknown}; known: {list(FLOOR_BASELINES)}")
    unknown = sorted(set(promotion.floor_metrics) - set(EVALUATION_METRICS))
    _require(not unknown, source, f"promotion.floor_metrics: unknown metric(s) {unknown}; known: {list(EVALUATION_METRICS)}")
    _require(promotion.bootstrap_resamples >= 100, source,
             f"promotion.bootstrap_resamples must be >= 100, got {promotion.bootstrap_resamples}")
    _require(0.5 <= promotion.confidence < 1, source, f"promotion.confidence must be in [0.5, 1), got {promotion.confidence}")
    _require(promotion.min_improvement >= 0, source,
             f"promotion.min_improvement must be >= 0, got {promotion.min_improvement}")
    unknown = sorted(set(promotion.photograph_baselines) - set(PHOTOGRAPH_BASELINES))
    _require(not unknown, source, f"promotion.photograph_baselines: unknown baseline(s) {unknown}; "
                                  f"known: {list(PHOTOGRAPH_BASELINES)}")
    unknown = sorted(set(promotion.photograph_metrics) - set(EVALUATION_METRICS))
    _require(not unknown, source, f"promotion.photograph_metrics: unknown metric(s) {unknown}; "
                                  f"known: {list(EVALUATION_METRICS)}")
    _require(bool(promotion.photograph_baselines) == bool(promotion.photograph_metrics), source,
             "promotion.photograph_baselines and promotion.photograph_metrics go together: both set or both empty, "
             f"got {list(promotion.photograph_baselines)} and {list(promotion.photograph_metrics)}")
    minimum = promotion.photograph_min_iou
    _require(minimum is None or (isinstance(minimum, (int, float)) and not isinstance(minimum, bool)
                                 and 0 <= minimum <= 1), source,
             f"promotion.photograph_min_iou must be in [0, 1] or null, got {promotion.photograph_min_iou}")
    _check_hpo(cfg.hpo, source)
    _check_drift(cfg.drift, source)
    _check_reference(cfg.reference, source)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_same_identity(evaluation: EvaluationConfig, source: Path) -> None:
    people, references, steps = (evaluation.same_identity_people, evaluation.same_identity_references,
                                 evaluation.same_identity_steps)
    _require(_is_int(people) and people >= 0, source,
             f"evaluation.same_identity_people must be an integer >= 0 (0: no same-identity test), got {people!r}")
    _require(_is_int(references) and references >= 1, source,
             f"evaluation.same_identity_references must be an integer >= 1, got {references!r}")
    _require(steps is None or (_is_int(steps) and steps >= 1), source,
             f"evaluation.same_identity_steps must be an integer >= 1 or null (null: reference.steps), got {steps!r}")


def _check_reference(reference: ReferenceConfig, source: Path) -> None:
    _require(isinstance(reference.steps, int) and reference.steps >= 1, source,
             f"reference.steps must be an integer >= 1, got {reference.steps!r}")
    for name in ("lr", "sigma"):
        _require(getattr(reference, name) > 0, source, f"reference.{name} must be > 0, got {getattr(reference, name)}")
    _require(reference.k > 0, source, f"reference.k must be > 0 (the prior weighs more as more is hidden), got {reference.k}")
    _require(0 <= reference.x0 <= 100, source, f"reference.x0 is an occluded percentage, in [0, 100]; got {reference.x0}")
    for name in ("reconstruction_weight", "perceptual_weight", "discriminator_weight"):
        _require(getattr(reference, name) >= 0, source, f"reference.{name} must be >= 0, got {getattr(reference, name)}")
    _require(reference.prior_region in ("hidden", "whole"), source,
             f"reference.prior_region must be hidden or whole, got {reference.prior_region!r}")
    _require(reference.perceptual_fallback in ("random", "none"), source,
             f"reference.perceptual_fallback must be random or none, got {reference.perceptual_fallback!r}")
    _require(bool(reference.perceptual_layers), source, "reference.perceptual_layers must name at least one VGG19 layer")


def _check_drift(drift: DriftConfig, source: Path) -> None:
    _require(isinstance(drift.reference, str), source,
             f"drift.reference must be a dataset folder, '{PREVIOUS_DATASET}' or empty, got {drift.reference!r}")
    _require(drift.on_drift in DRIFT_ACTIONS, source,
             f"drift.on_drift must be one of {list(DRIFT_ACTIONS)}, got {drift.on_drift!r}")
    _require(drift.p_value is None or (isinstance(drift.p_value, (int, float)) and 0 < drift.p_value < 1), source,
             f"drift.p_value must be in (0, 1) or null, got {drift.p_value!r}")
    _require(drift.statistic is None or (isinstance(drift.statistic, (int, float)) and 0 < drift.statistic <= 1), source,
             f"drift.statistic must be in (0, 1] or null, got {drift.statistic!r}")
    _require(drift.p_value is not None or drift.statistic is not None, source,
             "drift.p_value and drift.statistic are both null; set at least one threshold")
    _require(isinstance(drift.sample, int) and not isinstance(drift.sample, bool) and drift.sample >= 2, source,
             f"drift.sample must be an integer >= 2 (images per side), got {drift.sample!r}")


def _check_hpo(hpo: HpoConfig, source: Path) -> None:
    for name in ("random_trials", "tpe_trials", "pruner_startup_trials", "pruner_warmup_epochs", "max_retries"):
        value = getattr(hpo, name)
        _require(isinstance(value, int) and value >= 0, source, f"hpo.{name} must be an integer >= 0, got {value!r}")
    unknown = sorted(set(hpo.terms) - set(INPAINTER_LOSS_TERMS))
    _require(not unknown, source, f"hpo.terms: unknown loss term(s) {unknown}; known: {list(INPAINTER_LOSS_TERMS)}")
    _require(len(hpo.terms) == len(set(hpo.terms)) and (hpo.terms or not hpo.trials), source,
             f"hpo.terms must name each searched loss weight once, and at least one when trials run, got {list(hpo.terms)}")
    _require(0 < hpo.low < hpo.high and hpo.step > 0, source,
             f"hpo.low, hpo.high and hpo.step must satisfy 0 < low < high and step > 0, got {hpo.low}, {hpo.high}, {hpo.step}")
    steps = (hpo.high - hpo.low) / hpo.step
    _require(abs(steps - round(steps)) < 1e-6, source,
             f"hpo.step must divide hpo.high - hpo.low into whole steps, got {hpo.step} for {hpo.low}..{hpo.high}")
    _require(hpo.metric in HPO_METRICS, source, f"hpo.metric must be one of {list(HPO_METRICS)}, got {hpo.metric!r}")
    _require(hpo.pruner in HPO_PRUNERS, source, f"hpo.pruner must be one of {list(HPO_PRUNERS)}, got {hpo.pruner!r}")
    _require(bool(hpo.study), source, "hpo.study must be a non-empty study name")
    _require(isinstance(hpo.heartbeat_seconds, int) and hpo.heartbeat_seconds >= 1, source,
             f"hpo.heartbeat_seconds must be an integer >= 1, got {hpo.heartbeat_seconds!r}")


def _resolve_tracking_uri(uri: str, base: Path) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((base / uri[len(prefix):]).resolve())
    if "://" not in uri:
        return str((base / uri).resolve())
    return uri


def optuna_storage_url(url: str, base: Path) -> str:
    """A relative sqlite path resolved against the params file; postgresql:// spelled with the
    psycopg (3) driver, the one installed (SQLAlchemy's default for it is psycopg2)."""
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url[len("postgresql://"):]
    return _resolve_tracking_uri(url, base)


def _hpo_values(raw: dict[str, Any], env: dict[str, str], base: Path, source: Path) -> dict[str, Any]:
    values = dict(raw)
    if "terms" in values:
        values["terms"] = tuple(values["terms"] or ())
    storage = str(values.get("storage", HpoConfig.storage))
    # Credentials in params.yaml would land in git, params.resolved.yaml and MLflow.
    _require(not urlsplit(storage).password, source,
             f"hpo.storage must not hold a password; put the URL in the {OPTUNA_STORAGE_ENV} environment variable")
    values["storage"] = optuna_storage_url(env.get(OPTUNA_STORAGE_ENV) or storage, base)
    return values


def _redacted(url: str) -> str:
    """The URL with any user and password replaced, fit for an error message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def _remote(raw: Any, env: dict[str, str], source: Path) -> RemoteConfig:
    """params.yaml's `remote:` with DEOCCLUDE_REMOTE_* over it; a URL never carries credentials."""
    _require(raw is None or isinstance(raw, dict), source, "section 'remote' must be a mapping")
    values = {key: "" if value is None else value for key, value in (raw or {}).items()}
    _require("overrides" not in values, source,
             f"remote.overrides is not a setting; set {', '.join(REMOTE_ENV.values())} in the environment instead")
    shared = _build(RemoteConfig, values, "remote", source)
    for key in ("name", "url", "endpoint_url", "region"):
        _require(isinstance(getattr(shared, key), str), source,
                 f"remote.{key} must be a string, got {getattr(shared, key)!r}")
    overrides = {key: env[variable] for key, variable in REMOTE_ENV.items() if env.get(variable)}
    _check_remote(shared, source, lambda key: f"remote.{key}")
    _check_remote(replace(shared, **overrides), source,
                  lambda key: f"{REMOTE_ENV[key]} (over remote.{key})" if key in overrides else f"remote.{key}")
    return replace(shared, overrides=overrides)


def _check_remote(remote: RemoteConfig, source: Path, where: Callable[[str], str]) -> None:
    _require(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", remote.name) is not None, source,
             f"remote.name must be letters, digits, '_', '.' or '-', got {remote.name!r}")
    url = urlsplit(remote.url)
    _require(not remote.url or (url.scheme == "s3" and bool(url.netloc)), source,
             f"{where('url')} must be s3://bucket/prefix (or empty: no remote), got {_redacted(remote.url)!r}")
    endpoint = urlsplit(remote.endpoint_url)
    _require(not remote.endpoint_url or (endpoint.scheme in ("http", "https") and bool(endpoint.hostname)), source,
             f"{where('endpoint_url')} must be http(s)://host[:port] (or empty: AWS), got {_redacted(remote.endpoint_url)!r}")
    for key, parts in (("url", url), ("endpoint_url", endpoint)):
        # A key in a URL would land in .dvc/config, git and every log that prints the remote.
        _require(parts.username is None and parts.password is None, source,
                 f"{where(key)} must not hold credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                 "(or AWS_PROFILE) in the environment")
    _require(not remote.region or re.fullmatch(r"[a-z0-9-]+", remote.region) is not None, source,
             f"{where('region')} must be an AWS region name such as eu-west-1 (or empty), got {remote.region!r}")


def read_tuned_loss_weights(path: Path) -> dict[str, float]:
    """The loss weights the hpo stage wrote to params.tuned.yaml; {} when it has not run."""
    if not path.is_file():
        return {}
    try:
        tuned = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    weights = (tuned.get("inpainter") or {}).get("loss_weights") if isinstance(tuned, dict) else None
    if weights is None:
        weights = {}
    if not isinstance(weights, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in weights.values()):
        raise ConfigError(f"{path}: inpainter.loss_weights must map loss terms to positive numbers, got {weights!r}")
    unknown = sorted(set(weights) - set(INPAINTER_LOSS_TERMS))
    if unknown:
        raise ConfigError(f"{path}: inpainter.loss_weights: unknown term(s) {unknown}; known: {list(INPAINTER_LOSS_TERMS)}")
    return {str(term): float(weight) for term, weight in weights.items()}


def _read_params(source: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    unknown_keys = sorted(set(raw) - set(TOP_LEVEL_KEYS))
    if unknown_keys:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown_keys}; known: {list(TOP_LEVEL_KEYS)}")
    return raw


def _effective(raw: dict[str, Any], source: Path) -> tuple[str, dict[str, Any]]:
    profiles = raw.get("profiles") or {}
    profile = raw.get("profile", "quick")
    if profile not in profiles:
        raise ConfigError(f"{source}: profile '{profile}' is not defined under 'profiles' (defined: {', '.join(profiles) or 'none'})")
    for name, overrides in profiles.items():
        if "raw" in ((overrides or {}).get("data") or {}):
            raise ConfigError(f"{source}: profiles.{name}.data.raw: the raw folder is a DVC dependency resolved from "
                              "params.yaml's own data section; set data.raw there, not in a profile")
    return str(profile), merge_overrides({k: v for k, v in raw.items() if k not in ("profile", "profiles")}, profiles[profile] or {})


def resolve_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as the active profile makes it: `profile` plus every section with the overrides merged."""
    source = Path(path).resolve()
    profile, effective = _effective(_read_params(source), source)
    load_config(source, env={})  # refuse to resolve params that would not load
    return {"profile": profile, **effective}


def resolved_params_text(path: str | Path = PARAMS_FILE) -> str:
    source = Path(path).resolve()
    header = (f"# Written by the resolve_params stage from {source.name} (profile merged in); do not edit.\n"
              "# DVC tracks each stage's keys here, so only the stages whose values change rerun.\n")
    return header + yaml.safe_dump(resolve_params(source), sort_keys=False, default_flow_style=None, width=110)


def load_config(path: str | Path = PARAMS_FILE, env: dict[str, str] | None = None) -> Config:
    """Read params.yaml into a Config; MLFLOW_TRACKING_URI in the environment overrides the store."""
    source = Path(path).resolve()
    env = dict(os.environ) if env is None else env
    raw = _read_params(source)
    profile, effective = _effective(raw, source)
    base = source.parent
    registry_raw = dict(_section(effective, "registry", source))
    env_uri = env.get("MLFLOW_TRACKING_URI")
    registry_raw["tracking_uri"] = env_uri or _resolve_tracking_uri(str(registry_raw.get("tracking_uri", "")), base)
    registry_raw["parent_run_id"] = env.get(PARENT_RUN_ENV) or None
    artifact_root = registry_raw.get("artifact_root")
    # A tracking server owns its artifact store; only a local store gets our artifacts folder.
    local_store = not registry_raw["tracking_uri"].startswith(("http://", "https://", "databricks"))
    registry_raw["artifact_root"] = (base / artifact_root).resolve() if artifact_root and local_store else None
    evaluation_raw = dict(_section(effective, "evaluation", source))
    evaluation_raw["mask_ratio_bins"] = tuple(float(v) for v in evaluation_raw.get("mask_ratio_bins", ()))
    if "latency_batch_sizes" in evaluation_raw:
        evaluation_raw["latency_batch_sizes"] = tuple(int(v) for v in evaluation_raw["latency_batch_sizes"])
    inpainter_raw = _with_optimizer(_section(effective, "inpainter", source), "inpainter", source)
    if inpainter_raw.get("discriminator"):
        inpainter_raw["discriminator"] = _build(DiscriminatorConfig, inpainter_raw["discriminator"], "inpainter.discriminator", source)
    if "perceptual_layers" in inpainter_raw:
        inpainter_raw["perceptual_layers"] = tuple(inpainter_raw["perceptual_layers"])
    hpo = _build(HpoConfig, _hpo_values(effective.get("hpo") or {}, env, base, source), "hpo", source)
    tuned: dict[str, float] = {}
    if hpo.apply:
        # Only the searched terms: a term dropped from hpo.terms goes back to its params.yaml weight.
        tuned = {term: weight for term, weight in read_tuned_loss_weights(base / TUNED_PARAMS_FILE).items()
                 if term in hpo.terms}
        inpainter_raw["loss_weights"] = {**(inpainter_raw.get("loss_weights") or {}), **tuned}
    cfg = Config(
        root=base,
        profile=str(profile),
        seed=int(effective.get("seed", 0)),
        data=_build(DataConfig, _data_values(_section(effective, "data", source), source), "data", source),
        validation=_build(ValidationConfig, effective.get("validation") or {}, "validation", source),
        segmenter=_build(SegmenterConfig, _with_optimizer(_section(effective, "segmenter", source), "segmenter", source),
                         "segmenter", source),
        inpainter=_build(InpainterConfig, inpainter_raw, "inpainter", source),
        finetune=_build(FinetuneConfig, _with_optimizer(_section(effective, "finetune", source), "finetune", source),
                        "finetune", source),
        evaluation=_build(EvaluationConfig, evaluation_raw, "evaluation", source),
        registry=_build(RegistryConfig, registry_raw, "registry", source),
        promotion=_build(PromotionConfig, _promotion_values(effective.get("promotion") or {}), "promotion", source),
        hpo=hpo,
        tuned_loss_weights=tuned,
        remote=_remote(effective.get("remote"), env, source),
        drift=_build(DriftConfig, _drift_values(effective.get("drift") or {}), "drift", source),
        reference=_build(ReferenceConfig, _reference_values(effective.get("reference") or {}), "reference", source),
        raw=raw,
    )
    _check(cfg, source)
    return cfg


def _data_values(raw: dict[str, Any], source: Path) -> dict[str, Any]:
    values = dict(raw)
    values["ingest"] = _build(IngestParams, values.get("ingest") or {}, "data.ingest", source)
    return values


def _drift_values(raw: dict[str, Any]) -> dict[str, Any]:
    values = dict(raw)
    if values.get("reference") is None:
        values["reference"] = ""
    return values


def reference_config(values: dict[str, Any], source: str | Path) -> ReferenceConfig:
    """A `reference:` mapping from elsewhere than params.yaml (a pyfunc's params), checked alike;
    `source` names where it came from in errors."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: reference settings must be a mapping, got {type(values).__name__}")
    reference = _build(ReferenceConfig, _reference_values(values), "reference", Path(source))
    _check_reference(reference, Path(source))
    return reference


def _reference_values(raw: dict[str, Any]) -> dict[str, Any]:
    values = dict(raw)
    if "perceptual_layers" in values:
        values["perceptual_layers"] = tuple(values["perceptual_layers"] or ())
    return values


def _promotion_values(raw: dict[str, Any]) -> dict[str, Any]:
    values = dict(raw)
    for key in ("floor_baselines", "floor_metrics", "photograph_baselines", "photograph_metrics"):
        if key in values:
            values[key] = tuple(values[key] or ())
    return values


def as_flat_dict(section: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a config section for logging as MLflow params."""
    flat: dict[str, Any] = {}
    for key, value in (asdict(section) if hasattr(section, "__dataclass_fields__") else section).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(as_flat_dict(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Set in a process of a distributed training run before Lightning's Trainer exists: its launcher
# sets LOCAL_RANK in the processes it starts on a node, the user NODE_RANK on every node but the
# first, torchrun RANK in every process.
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK")


def is_global_rank_zero(env: dict[str, str] | None = None) -> bool:
    """Whether this process is the first of a distributed training run (or there is none): the one
    that records the stage in MLflow and writes its outputs."""
    env = dict(os.environ) if env is None else env
    return all(env.get(name, "0") == "0" for name in RANK_VARIABLES)
