"""params.yaml -> frozen typed dataclasses. The only module that reads YAML or the environment."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = "params.yaml"
OCCLUDER_TYPES = ("face_mask", "sunglasses", "hand", "hat", "cup", "strokes", "box")


class ConfigError(ValueError):
    """params.yaml is missing, malformed, or holds an invalid value."""


@dataclass(frozen=True)
class DataConfig:
    count: int
    resolution: int
    splits: dict[str, float]
    mask_ratio_min: float
    mask_ratio_max: float
    occluders: dict[str, float]


@dataclass(frozen=True)
class ValidationConfig:
    max_failing_examples: int = 5


@dataclass(frozen=True)
class SegmenterConfig:
    arch: str
    arch_kwargs: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    threshold: float = 0.5


@dataclass(frozen=True)
class InpainterConfig:
    arch: str
    arch_kwargs: dict[str, Any]
    epochs: int
    batch_size: int
    lr: float
    loss_weights: dict[str, float]


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int
    batch_size: int
    lr: float
    loss_weights: dict[str, float]


@dataclass(frozen=True)
class EvaluationConfig:
    grid_samples: int
    mask_ratio_bins: tuple[float, ...]
    telea_radius: int = 3


@dataclass(frozen=True)
class RegistryConfig:
    tracking_uri: str
    artifact_root: Path | None
    experiment: str
    promote_metric: str
    promote_greater_is_better: bool = True


@dataclass(frozen=True)
class Config:
    root: Path
    seed: int
    data: DataConfig
    validation: ValidationConfig
    segmenter: SegmenterConfig
    inpainter: InpainterConfig
    finetune: FinetuneConfig
    evaluation: EvaluationConfig
    registry: RegistryConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def params_hash(self) -> str:
        """sha256 of the canonical JSON of params.yaml: the same params give the same hash."""
        canonical = json.dumps(self.raw, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _section(raw: dict[str, Any], name: str, source: Path) -> dict[str, Any]:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: section '{name}' is missing or not a mapping")
    return value


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
    unknown = sorted(set(d.occluders) - set(OCCLUDER_TYPES))
    _require(not unknown, source, f"data.occluders: unknown type(s) {unknown}; known: {list(OCCLUDER_TYPES)}")
    _require(sum(d.occluders.values()) > 0 and all(v >= 0 for v in d.occluders.values()), source,
             "data.occluders weights must be >= 0 with a positive sum")
    for name in ("segmenter", "inpainter", "finetune"):
        section = getattr(cfg, name)
        _require(section.lr > 0, source, f"{name}.lr must be > 0, got {section.lr}")
        _require(section.epochs >= 1, source, f"{name}.epochs must be >= 1, got {section.epochs}")
        _require(section.batch_size >= 1, source, f"{name}.batch_size must be >= 1, got {section.batch_size}")
    _require(0 < cfg.segmenter.threshold < 1, source, f"segmenter.threshold must be in (0, 1), got {cfg.segmenter.threshold}")
    bins = cfg.evaluation.mask_ratio_bins
    _require(len(bins) >= 2 and list(bins) == sorted(bins), source, f"evaluation.mask_ratio_bins must be >= 2 increasing edges, got {list(bins)}")


def _resolve_tracking_uri(uri: str, base: Path) -> str:
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        return prefix + str((base / uri[len(prefix):]).resolve())
    if "://" not in uri:
        return str((base / uri).resolve())
    return uri


def load_config(path: str | Path = PARAMS_FILE, env: dict[str, str] | None = None) -> Config:
    """Read params.yaml into a Config; MLFLOW_TRACKING_URI in the environment overrides the store."""
    source = Path(path).resolve()
    env = dict(os.environ) if env is None else env
    try:
        raw = yaml.safe_load(source.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    base = source.parent
    registry_raw = dict(_section(raw, "registry", source))
    env_uri = env.get("MLFLOW_TRACKING_URI")
    registry_raw["tracking_uri"] = env_uri or _resolve_tracking_uri(str(registry_raw.get("tracking_uri", "")), base)
    artifact_root = registry_raw.get("artifact_root")
    # A tracking server owns its artifact store; only a local store gets our artifacts folder.
    local_store = not registry_raw["tracking_uri"].startswith(("http://", "https://", "databricks"))
    registry_raw["artifact_root"] = (base / artifact_root).resolve() if artifact_root and local_store else None
    evaluation_raw = dict(_section(raw, "evaluation", source))
    evaluation_raw["mask_ratio_bins"] = tuple(float(v) for v in evaluation_raw.get("mask_ratio_bins", ()))
    cfg = Config(
        root=base,
        seed=int(raw.get("seed", 0)),
        data=_build(DataConfig, _section(raw, "data", source), "data", source),
        validation=_build(ValidationConfig, raw.get("validation") or {}, "validation", source),
        segmenter=_build(SegmenterConfig, _section(raw, "segmenter", source), "segmenter", source),
        inpainter=_build(InpainterConfig, _section(raw, "inpainter", source), "inpainter", source),
        finetune=_build(FinetuneConfig, _section(raw, "finetune", source), "finetune", source),
        evaluation=_build(EvaluationConfig, evaluation_raw, "evaluation", source),
        registry=_build(RegistryConfig, registry_raw, "registry", source),
        raw=raw,
    )
    _check(cfg, source)
    return cfg


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
