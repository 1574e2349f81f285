"""One run configuration: plain dataclasses, read from YAML presets, overridden by ``key=value``."""

from __future__ import annotations

import types
import typing
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
    # stack mode with model.band: a second band channel of this smaller radius (px), for defects shallower than
    # model.band (small bites into copper edges); 0 = none
    fine_band: int = 0
    # Tiles whose tolerance-band map (radius model.band, or 2) has at most `gate` pixels within the tile and
    # `gate_margin` px around it skip the network and get the model's null score; -1: every tile is scored.
    gate: int = -1
    gate_margin: int = 4
    # Test-time views (1, 2, 4 or 8 flips and quarter turns of each pair, scores averaged): as many passes of
    # the network; only modes whose network sees the pair together, not each patch on its own (stack).
    views: int = 1


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
    # pair modes: focusing parameter of the focal loss (Lin et al. 2017), which weights each pair's
    # cross-entropy by (1 - p_true) ** gamma so that confidently right pairs count less; 0 = plain cross-entropy
    focal_gamma: float = 0.0
    epochs: int = 10
    batch_size: int = 16
    optimizer: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_steps: int = 0
    augment: bool = False
    # each training patch rendered as another scan might (contrast, grey level, blur, JPEG quality;
    # data.transforms.Photometric): the tested and reference patches of a pair independently
    photometric: bool = False
    seed: int = 0
    val_max_patches: int | None = None
    checkpoint_every: int = 50
    log_every: int = 10
    device: str = "auto"
    amp: bool = True  # bfloat16 autocast on CUDA
    # bfloat16 autocast of the training steps on the CPU as well (processors with AVX512-BF16 or AMX);
    # validation scores stay float32
    cpu_amp: bool = False


@dataclass
class Config:
    """A whole run: model, data and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict."""
        return asdict(self)


#: Settings of how a trained network is applied, not of what it learns: a finished run can be scored
#: again with other values (``pcbsiam cv`` rescores its folds when they change).
INFERENCE_KEYS = ("model.gate", "model.gate_margin", "model.views")

#: The numbers of test-time views (``model.views``, ``pcbsiam detect --views``): the first 1, 2, 4 or 8 of
#: :data:`pcbsiam.data.transforms.DIHEDRAL_VIEWS`.
VIEW_COUNTS = (1, 2, 4, 8)


def inference_settings(cfg: Config) -> dict[str, Any]:
    """The :data:`INFERENCE_KEYS` of ``cfg``, as ``{"model.gate": -1, ...}``."""
    out = {}
    for key in INFERENCE_KEYS:
        section, name = key.split(".")
        out[key] = getattr(getattr(cfg, section), name)
    return out


def without_inference(cfg: Config) -> dict[str, Any]:
    """``cfg`` as a nested dict without its :data:`INFERENCE_KEYS`."""
    d = cfg.to_dict()
    for key in INFERENCE_KEYS:
        section, name = key.split(".")
        d[section].pop(name, None)
    return d


LOSSES = ("triplet", "ce", "triplet+ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
#: ``cosine``: linear warm-up then cosine decay over the run's planned steps; ``none``: a constant rate.
SCHEDULERS = ("cosine", "none")
SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

#: Lower bounds of numeric settings: (key, bound, strict). ``None`` passes for optional settings.
_BOUNDS = (
    ("model.embedding_dim", 1, False),
    ("model.hidden_dim", 1, False),
    ("model.input_size", 16, False),
    ("model.num_classes", 1, False),
    ("model.band", 0, False),
    ("model.fine_band", 0, False),
    ("model.gate", -1, False),
    ("model.gate_margin", 0, False),
    ("data.patch", 1, False),
    ("data.stride", 1, False),
    ("data.split_seed", 0, False),
    ("data.workers", 0, False),
    ("data.context", 0, False),
    ("data.local_shift", 0, False),
    ("train.margin", 0, False),
    ("train.triplet_weight", 0, False),
    ("train.ce_weight", 0, False),
    ("train.triplets", 1, False),
    ("train.pairs", 1, False),
    ("train.ref_shift", 0, False),
    ("train.pos_weight", 0, True),
    ("train.focal_gamma", 0, False),
    ("train.epochs", 1, False),
    ("train.batch_size", 1, False),
    ("train.lr", 0, True),
    ("train.weight_decay", 0, False),
    ("train.warmup_steps", 0, False),
    ("train.seed", 0, False),
    ("train.val_max_patches", 1, False),
    ("train.checkpoint_every", 1, False),
    ("train.log_every", 1, False),
)


_TYPE_NAMES = {bool: ("a boolean (true or false)", "booleans"), int: ("an integer", "integers")}
_TYPE_NAMES |= {float: ("a number", "numbers"), str: ("a string", "strings")}


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return f"a list of {_TYPE_NAMES[item][1]} (e.g. {'[1, 2]' if item is int else '[a, b]'})"
    return _TYPE_NAMES[hint][0]


def _fits(hint: Any, value: Any) -> bool:
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_fits(item, v) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _checked(key: str, hint: Any, value: Any) -> Any:
    """``value`` if it has the type ``hint`` (an int where a float is meant becomes a float); a
    ConfigError naming ``key``, the expected type and the value otherwise."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
    if optional:
        if value is None:
            return None
        (hint,) = args
    if not _fits(hint, value):
        expected = _describe(hint) + (" or null" if optional else "")
        quote = " (quote it to keep it text)" if hint is str and isinstance(value, int | float | bool) else ""
        raise ConfigError(f"{key} must be {expected}; got {value!r} ({type(value).__name__}){quote}")
    return float(value) if hint is float else value


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(str(k) for k in set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; valid: {sorted(hints)}")
    return cls(**{k: _checked(where + k, hints[k], v) for k, v in values.items()})


def _sections(d: Any) -> dict[str, dict[str, Any]]:
    """The sections of a config mapping, each a (new) dict; a ConfigError for any other shape."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(
            f"a config must be a mapping of the sections model, data and train, got a {type(d).__name__}: {d!r}"
        )
    unknown = sorted(str(k) for k in set(d) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown config section(s) {unknown}; valid: model, data, train")
    out = {}
    for name, values in d.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(
                f"config section {name!r} must be a mapping of settings (e.g. {name}: {{key: value}}), "
                f"got a {type(values).__name__}: {values!r}"
            )
        out[name] = dict(values or {})
    return out


def from_dict(d: dict[str, Any]) -> Config:
    """Build a Config from a nested dict, rejecting unknown keys, values of the wrong type and
    values that cannot work with a sentence naming the setting."""
    sections = _sections(d)
    cfg = Config(*(_build(cls, sections.get(name, {}), f"{name}.") for name, cls in SECTIONS.items()))
    validate(cfg)
    return cfg


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def validate(cfg: Config) -> None:
    """Raise ConfigError on values that cannot work."""
    _choice("train.loss", cfg.train.loss, LOSSES)
    _choice("train.optimizer", cfg.train.optimizer, OPTIMIZERS)
    _choice("train.scheduler", cfg.train.scheduler, SCHEDULERS)
    for key, bound, strict in _BOUNDS:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and not (value > bound if strict else value >= bound):
            raise ConfigError(f"{key} must be {'>' if strict else '>='} {bound}, got {value}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction must be at least 0 and below 1 (0: train on every item, no validation), "
            f"got {cfg.data.val_fraction}"
        )
    if not 0.0 < cfg.model.band_level < 1.0:
        raise ConfigError(f"model.band_level must be between 0 and 1 (exclusive), got {cfg.model.band_level}")
    from pcbsiam.models import list_modes, mode_class  # the registry imports this module: import it when validating

    mode_class(cfg.model.mode).check_config(cfg.model)
    if cfg.model.views not in VIEW_COUNTS:
        raise ConfigError(f"model.views must be one of {', '.join(map(str, VIEW_COUNTS))}, got {cfg.model.views}")
    if cfg.model.views > 1 and mode_class(cfg.model.mode).encodes_references:
        whole = [m for m in list_modes() if not mode_class(m).encodes_references]
        raise ConfigError(
            f"model.views turns the pair as a whole: it needs a mode whose network sees both patches together "
            f"({', '.join(whole)}), not {cfg.model.mode!r}, which encodes each patch on its own"
        )
    if cfg.data.local_shift > 0 and not cfg.data.register:
        raise ConfigError("data.local_shift refines the global shift of data.register: set data.register=true")


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
    out = _sections(d)
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
            raise ConfigError(f"{p} is not valid YAML: {' '.join(str(exc).split())}") from exc
        if not isinstance(d, dict):
            raise ConfigError(
                f"{p} must hold a mapping of the sections model, data and train; its top level is a {type(d).__name__}"
            )
    return from_dict(apply_overrides(d, overrides or []))


def dump_config(cfg: Config) -> str:
    """YAML text of ``cfg``."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
