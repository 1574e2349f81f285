"""One run configuration: plain dataclasses, read from YAML presets, overridden by ``key=value``."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcbsiam.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    """Plain settings of the network (saved with every checkpoint and bundle)."""

    mode: str = "paper"
    backbone: str = "resnet50"
    scales: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    embedding_dim: int = 32
    hidden_dim: int = 4096
    input_size: int = 128
    num_classes: int = 1
    weights: str | None = None
    band: int = 0  # stack mode: tolerance-band radius (px) of the classical-comparison channel; 0 = none
    band_level: float = 0.5  # its binarisation level, a fraction of full scale


@dataclass
class DataConfig:
    """Where the data is and how it is cut and split."""

    root: str | None = None
    split: str = "trainval.txt"
    patch: int = 128
    stride: int | None = None
    val_fraction: float = 0.1
    split_seed: int = 0
    holdout_groups: list[str] = field(default_factory=list)
    cache_dir: str | None = None
    workers: int = 0
    register: bool = False
    context: int = 0  # px of surroundings around each patch shown to the network; the label stays the patch's
    local_shift: int = 0  # with register: per-patch refinement of the reference crop by up to this many px


@dataclass
class TrainConfig:
    """Optimisation settings."""

    loss: str = "triplet+ce"
    margin: float = 0.2
    triplet_weight: float = 1.0
    ce_weight: float = 1.0
    triplets: int = 15000
    pairs: int = 4800
    ref_shift: int = 0
    pos_weight: float = 1.0
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_steps: int = 0
    augment: bool = False
    seed: int = 0
    val_max_patches: int | None = None
    checkpoint_every: int = 50
    log_every: int = 10
    device: str = "auto"
    amp: bool = True


@dataclass
class Config:
    """A whole run: model, data and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict."""
        return asdict(self)


LOSSES = ("triplet", "ce", "triplet+ce")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; valid: {sorted(names)}")
    return cls(**values)


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from a nested dict, rejecting unknown keys with a sentence."""
    d = d or {}
    unknown = sorted(set(d) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: model, data, train")
    cfg = Config(
        _build(ModelConfig, d.get("model") or {}, "model."),
        _build(DataConfig, d.get("data") or {}, "data."),
        _build(TrainConfig, d.get("train") or {}, "train."),
    )
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise ConfigError on values that cannot work."""
    if cfg.train.loss not in LOSSES:
        raise ConfigError(f"train.loss must be one of {LOSSES}, got {cfg.train.loss!r}")
    for name in ("triplets", "epochs", "batch_size"):
        if getattr(cfg.train, name) < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {getattr(cfg.train, name)}")
    if cfg.model.embedding_dim < 1 or cfg.model.input_size < 16:
        raise ConfigError("model.embedding_dim must be >= 1 and model.input_size >= 16")
    if cfg.model.band < 0 or not 0.0 < cfg.model.band_level < 1.0:
        raise ConfigError(
            "model.band must be >= 0 px and model.band_level in (0, 1), "
            f"got {cfg.model.band} and {cfg.model.band_level}"
        )
    from pcbsiam.models import mode_class  # the registry imports this module: import it when validating

    mode_class(cfg.model.mode).check_config(cfg.model)
    if cfg.data.local_shift < 0:
        raise ConfigError(f"data.local_shift must be >= 0 px, got {cfg.data.local_shift}")
    if cfg.data.local_shift > 0 and not cfg.data.register:
        raise ConfigError("data.local_shift refines the global shift of data.register: set data.register=true")
    if cfg.data.context < 0:
        raise ConfigError(f"data.context must be >= 0 px, got {cfg.data.context}")


def resolve_shipped(name_or_path: str | Path, folder: Path, kind: str) -> Path:
    """A YAML file path, or the name of a file shipped in ``folder`` (``kind`` names it in the error)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = folder / f"{Path(str(name_or_path)).stem}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(f.stem for f in folder.glob("*.yaml"))
    raise ConfigError(f"{kind} {name_or_path} not found; give a YAML file or a shipped {kind} name: {names}")


def resolve_preset(name_or_path: str | Path) -> Path:
    """A config file path, or the name of a shipped preset (``cpu-small``, ``paper``, ...)."""
    return resolve_shipped(name_or_path, PRESET_DIR, "config")


def parse_value(text: str) -> Any:
    """Parse an override value as YAML (``0.1`` -> float, ``[1,2]`` -> list, ``null`` -> None)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a nested dict (returns a new dict)."""
    out = {k: dict(v or {}) for k, v in d.items()}
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=0.001")
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        out.setdefault(section, {})[name] = parse_value(value)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or a preset name) and apply overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        p = resolve_preset(path)
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from exc
    return from_dict(apply_overrides(d, overrides or []))


def dump_config(cfg: Config) -> str:
    """YAML text of ``cfg``."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
