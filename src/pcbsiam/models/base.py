"""The contract every mode's network keeps, and the registry from mode name to network class.

A mode is one file under ``pcbsiam/models/`` with a :class:`PairModel` subclass decorated with
:func:`register_mode`; nothing else in the package tests a mode's name. Callers ask the network
(or its class) what they need: the name and direction of its score, whether references can be
encoded once and shared, which training objective it learns with, whether its encoding is a single
embedding vector (exportable as an ``embeddings`` ONNX graph).
"""

from __future__ import annotations

from typing import ClassVar, TypeVar

import torch
from torch import nn

from pcbsiam.config import ModelConfig
from pcbsiam.errors import ConfigError

#: What :meth:`PairModel.encode` returns: one tensor, or one feature map per backbone stage.
Encoded = torch.Tensor | list[torch.Tensor]


class PairModel(nn.Module):
    """A network that scores a tested patch against its reference; higher scores mean "defective".

    Subclasses set the class attributes and implement :meth:`encode` and :meth:`compare`.
    The decision threshold on the score is a buffer, so checkpoints, bundles and exported graphs
    carry it.

    Attributes:
        mode: the registry name (``model.mode``).
        score_name: short name of the score (``distance``, ``logit``): report and graph output keys.
        score_label: how plots and reports label the score (``L2 distance``).
        encodes_references: whether :meth:`encode` of a reference is worth computing once and
            sharing between tested patches (False when the whole network needs both patches).
        embeds: whether :meth:`encode` gives one (B, D) embedding per patch (an ``embeddings``
            ONNX graph then takes precomputed reference embeddings).
        objective: the training objective (``pcbsiam.train.objectives``): ``triplet`` or ``pair``.
        null_score: the score of a pair that shows no difference at all, given to the tiles the
            gate skips (:class:`pcbsiam.models.band.TileGate`).
    """

    mode: ClassVar[str]
    score_name: ClassVar[str]
    score_label: ClassVar[str]
    encodes_references: ClassVar[bool] = True
    embeds: ClassVar[bool] = False
    objective: ClassVar[str]
    null_score: ClassVar[float] = 0.0

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("threshold", torch.tensor(float("nan")))

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        """Raise ConfigError for settings this mode cannot use (by default: the band channels)."""
        for key, value in (("band", cfg.band), ("fine_band", cfg.fine_band)):
            if value > 0:
                raise ConfigError(f"model.{key} (a tolerance-band channel) needs model.mode=stack, not {cfg.mode!r}")

    @property
    def in_channels(self) -> int:
        """Channels of the backbone's input."""
        return 1

    def encode(self, x: torch.Tensor) -> Encoded:
        """(B, 1, S, S) normalised patches -> what :meth:`compare` takes of each side."""
        raise NotImplementedError

    def compare(self, tested: Encoded, reference: Encoded) -> torch.Tensor:
        """Scores (B,) of encoded tested patches against their encoded references."""
        raise NotImplementedError

    def score_pairs(self, tested: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) scores of (B, 1, S, S) tested patches against (B, 1, S, S) references."""
        return self.compare(self.encode(tested), self.encode(reference))

    def decide(self, score: torch.Tensor) -> torch.Tensor:
        """Verdicts (True = defective) of (B,) scores at the stored threshold."""
        if torch.isnan(self.threshold):
            raise RuntimeError("the model has no threshold yet: run `pcbsiam calibrate` first")
        return score > self.threshold


M = TypeVar("M", bound=type[PairModel])
_REGISTRY: dict[str, type[PairModel]] = {}


def register_mode(cls: M) -> M:
    """Class decorator: make ``cls`` the network of ``model.mode = cls.mode``."""
    if cls.mode in _REGISTRY and _REGISTRY[cls.mode] is not cls:
        raise ValueError(f"mode {cls.mode!r} is registered twice ({_REGISTRY[cls.mode].__name__}, {cls.__name__})")
    _REGISTRY[cls.mode] = cls
    return cls


def list_modes() -> list[str]:
    """Registered mode names, in registration order."""
    return list(_REGISTRY)


def mode_class(name: str) -> type[PairModel]:
    """The network class of mode ``name``; a sentence naming the valid modes otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"model.mode must be one of {list_modes()}, got {name!r}") from None


def create_model(cfg: ModelConfig) -> PairModel:
    """The network of ``cfg.mode``; no weights are loaded."""
    return mode_class(cfg.mode)(cfg)


def build_model(cfg: ModelConfig) -> PairModel:
    """The network for ``cfg``, with local ImageNet weights in its backbone if ``cfg.weights`` names a file."""
    model = create_model(cfg)
    if cfg.weights:
        from pcbsiam.models.backbone import load_backbone_weights

        load_backbone_weights(model.backbone, cfg.weights)
    return model


__all__: list[str] = [
    "Encoded",
    "PairModel",
    "build_model",
    "create_model",
    "list_modes",
    "mode_class",
    "register_mode",
]
