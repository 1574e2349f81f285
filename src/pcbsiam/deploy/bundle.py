"""The model bundle: network, threshold, policy, config and registered standard boards in one file.

A bundle is what calibration writes and what inspection, evaluation, export and the service read.
Standard boards are stored as uint8 images; their tile embeddings are computed once when needed and
cached by the inspector, never stored (they follow from the weights).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcbsiam.checkpoint import load_checkpoint, load_tagged, save_tagged
from pcbsiam.config import INFERENCE_KEYS, Config, apply_overrides, from_dict
from pcbsiam.data.crops import PatchSpec
from pcbsiam.errors import ConfigError, PcbsiamError
from pcbsiam.models import PairModel, create_model

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "pcbsiam-bundle"
BUNDLE_VERSION = 1


@dataclass
class Bundle:
    """A calibrated inspector.

    Attributes:
        model: the network (any mode); ``model.threshold`` holds the calibrated threshold on its score.
        cfg: the training configuration (input size, patch size, ...).
        groups: PCB types the classifier head was trained on.
        policy: calibration policy that chose the threshold (``accuracy``, ``f1``, ``recall:0.995``).
        calibration: what calibration measured (metric values, counts, data used).
        boards: registered standard boards by name: (H, W) uint8 images.
        data: the training data's description (:func:`pcbsiam.data.sources.describe_data`: layout,
            synthetic or not, groups, items, fingerprint); empty for models trained before it was recorded.
    """

    model: PairModel
    cfg: Config
    groups: list[str]
    policy: str = "accuracy"
    calibration: dict = field(default_factory=dict)
    boards: dict[str, np.ndarray] = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        """The decision threshold on the model's score (NaN before calibration)."""
        return float(self.model.threshold)

    @property
    def spec(self) -> PatchSpec:
        """How boards are cut into the network's inputs, resolved from the config."""
        return PatchSpec.from_config(self.cfg)

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write the bundle atomically; load it with :func:`load_bundle`.

        Args:
            path: the file.
            half: store the weight matrices and kernels (floating tensors of 2 or more dimensions) as
                float16, halving the file (a ResNet18 bundle: 46 -> 23 MB) for shipping; biases,
                normalisation statistics and the threshold stay float32. They load back as float32.
        """
        state = self.model.state_dict()
        if half:
            state = {k: v.half() if v.is_floating_point() and v.dim() >= 2 else v for k, v in state.items()}
        payload = {
            "config": self.cfg.to_dict(),
            "spec": self.spec.to_dict(),
            "groups": list(self.groups),
            "policy": self.policy,
            "calibration": self.calibration,
            "model": state,
            "boards": {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.boards.items()},
            "data": self.data,
        }
        return save_tagged(path, BUNDLE_FORMAT, BUNDLE_VERSION, payload)


def load_bundle(
    path: str | Path,
    device: str | torch.device = "cpu",
    inference: dict[str, Any] | None = None,
    recalibrating: bool = False,
) -> Bundle:
    """Read a bundle file, or a training run folder / checkpoint (then uncalibrated unless the run
    validated a threshold), with ``weights_only=True``.

    Args:
        path: the bundle, run folder or checkpoint.
        device: where the network goes.
        inference: other values of the settings of how the network is applied
            (:data:`pcbsiam.config.INFERENCE_KEYS`, e.g. ``{"model.gate": 0}``); None values keep the bundle's.
        recalibrating: the caller chooses a new threshold (no warning that the stored one saw other views).

    Raises:
        PcbsiamError: the file is missing, not a bundle or checkpoint, or from a newer format.
        ConfigError: ``inference`` names another setting, or a value out of range.
    """
    from pcbsiam.ready import READY_MODELS, resolve_model

    path = resolve_model(path)
    if path.is_dir() or _is_checkpoint(path):
        model, cfg, groups = load_trained(path, device)
        bundle = Bundle(model, cfg, groups, policy="accuracy", calibration={"source": "training validation"})
        bundle.data = training_data(path)
        bundle = _apply_inference(bundle, inference)
        return bundle if recalibrating else _warn_views(bundle, 1, path)  # validation scores one view
    if not path.is_file():
        raise PcbsiamError(
            f"model {path} not found: give a bundle file, a training run folder or a ready model "
            f"({', '.join(READY_MODELS)})"
        )
    data = load_tagged(path, BUNDLE_FORMAT, BUNDLE_VERSION, "bundle", device, exact=True, remedy=_RECALIBRATE)
    _require(data, path, "bundle", ("config", "model", "groups", "policy", "calibration"), _RECALIBRATE)
    model, cfg = _network(data, path, "bundle", _RECALIBRATE)
    boards = {k: v.cpu().numpy() for k, v in data.get("boards", {}).items()}
    bundle = Bundle(model.to(device).eval(), cfg, list(data["groups"]), data["policy"], data["calibration"], boards)
    bundle.data = dict(data.get("data") or {})
    calibrated_views = cfg.model.views
    bundle = _apply_inference(bundle, inference)
    return bundle if recalibrating else _warn_views(bundle, calibrated_views, path)


def _warn_views(bundle: Bundle, calibrated_views: int, path: Path) -> Bundle:
    """``bundle``, after a warning when it is applied in other test-time views than its threshold saw."""
    if bundle.cfg.model.views != calibrated_views and not np.isnan(bundle.threshold):
        log.warning(
            "%s: its threshold was chosen on scores of %d view(s), applied now with %d; for a threshold of "
            "these scores calibrate it with --views %d",
            path,
            calibrated_views,
            bundle.cfg.model.views,
            bundle.cfg.model.views,
        )
    return bundle


def training_data(path: str | Path) -> dict:
    """The training data's description a run folder recorded (``data.json``), for the run or one of its
    checkpoints; empty when the run is older than the record."""
    p = Path(path)
    for cand in (p / "data.json", p.parent.parent / "data.json"):
        if cand.is_file():
            return json.loads(cand.read_text())
    return {}


def _apply_inference(bundle: Bundle, inference: dict[str, Any] | None) -> Bundle:
    """``bundle`` with the given :data:`~pcbsiam.config.INFERENCE_KEYS` set (checked like a config)."""
    chosen = {k: v for k, v in (inference or {}).items() if v is not None}
    if not chosen:
        return bundle
    other = sorted(set(chosen) - set(INFERENCE_KEYS))
    if other:
        raise ConfigError(
            f"only {', '.join(INFERENCE_KEYS)} can change when a model is applied, not {', '.join(other)}"
        )
    cfg = from_dict(apply_overrides(bundle.cfg.to_dict(), [f"{k}={v}" for k, v in chosen.items()]))
    for key in chosen:
        section, name = key.split(".")
        setattr(getattr(bundle.cfg, section), name, getattr(getattr(cfg, section), name))
    return bundle


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> tuple[PairModel, Config, list[str]]:
    """A model from a run folder (its best checkpoint) or a checkpoint file, with its config and groups."""
    path = Path(path)
    ck_path = path / "checkpoints" / "best.pt" if path.is_dir() else path
    ck = load_checkpoint(ck_path, map_location=device)
    remedy = "train it again with this pcbsiam"
    _require(ck, ck_path, "training checkpoint", ("config", "model", "groups"), remedy)
    model, cfg = _network(ck, ck_path, "training checkpoint", remedy)
    return model.to(device).eval(), cfg, list(ck["groups"])


_RECALIBRATE = "re-run `pcbsiam calibrate` with its training run"


def _require(data: dict, path: Path, what: str, keys: tuple[str, ...], remedy: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise PcbsiamError(f"{path} is a {what} without {', '.join(missing)}: {remedy}")


def _network(data: dict, path: Path, what: str, remedy: str) -> tuple[PairModel, Config]:
    """The network a tagged file's config describes, with the file's weights; a sentence when they do not fit."""
    if not isinstance(data["config"], dict) or not isinstance(data["model"], dict):
        raise PcbsiamError(f"{path}: the {what}'s config or weights are not mappings: {remedy}")
    try:
        cfg = from_dict(data["config"])
    except PcbsiamError as exc:
        raise PcbsiamError(f"{path}: the {what}'s config is invalid ({exc}): {remedy}") from exc
    model = create_model(cfg.model)
    want = model.state_dict()
    got = data["model"]
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    reshaped = [
        k for k in want if k in got and (not torch.is_tensor(got[k]) or tuple(got[k].shape) != tuple(want[k].shape))
    ]
    if missing or unexpected or reshaped:
        first = (missing or unexpected or reshaped)[0]
        raise PcbsiamError(
            f"{path}: the {what}'s weights do not fit its config (model.mode={cfg.model.mode}, "
            f"model.backbone={cfg.model.backbone}): {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(reshaped)} of another shape (first: {first}); {remedy}"
        )
    model.load_state_dict(got)
    return model, cfg


def _is_checkpoint(path: Path) -> bool:
    return path.is_file() and path.suffix == ".pt" and path.parent.name == "checkpoints"
