"""ResNet backbones returning the outputs of chosen stages, and loading of local ImageNet weights."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from pcbsiam.errors import ConfigError

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
STAGES = (1, 2, 3, 4)


def check_scales(scales: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Validate a subset of ResNet stages (1..4); returns it sorted."""
    chosen = tuple(sorted(set(int(s) for s in scales)))
    if not chosen or any(s not in STAGES for s in chosen):
        raise ConfigError(f"scales must be a non-empty subset of {list(STAGES)}, got {list(scales)}")
    return chosen


def create_backbone(name: str, scales: tuple[int, ...] = STAGES, in_chans: int = 1) -> nn.Module:
    """A timm ResNet with ``features_only``: forward gives one (B, C_s, H_s, W_s) map per chosen stage.

    Channel counts are read from ``module.feature_info.channels()``; nothing is downloaded.
    """
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return timm.create_model(
        name, pretrained=False, features_only=True, out_indices=check_scales(scales), in_chans=in_chans
    )


def adapt_state_dict(state: dict[str, torch.Tensor], backbone: nn.Module) -> dict[str, torch.Tensor]:
    """Map an ImageNet ResNet state dict (torchvision or timm key names) onto ``backbone``.

    The classifier and stages the backbone does not use are dropped; an RGB first convolution is
    summed over its input channels for greyscale input.

    Raises:
        ConfigError: keys the backbone needs are missing or shapes differ (names a few of them).
    """
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    own = backbone.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, target in own.items():
        if key not in state:
            continue
        value = state[key]
        if key == "conv1.weight" and value.shape[1] != target.shape[1]:
            value = (
                value.sum(dim=1, keepdim=True)
                if target.shape[1] == 1
                else value.mean(1, keepdim=True).repeat(1, target.shape[1], 1, 1)
            )
        out[key] = value
    missing = [k for k in own if k not in out and not k.endswith("num_batches_tracked")]
    wrong = [f"{k} {tuple(out[k].shape)} vs {tuple(own[k].shape)}" for k in out if out[k].shape != own[k].shape]
    if missing or wrong:
        detail = "; ".join(
            ([f"missing {len(missing)} keys, e.g. {missing[:3]}"] if missing else [])
            + ([f"shape mismatch: {wrong[:3]}"] if wrong else [])
        )
        raise ConfigError(
            f"weights do not fit this backbone ({detail}); is it an ImageNet state dict of the same ResNet?"
        )
    return out


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local ImageNet state dict file (``.pth``/``.pt``/``.bin`` or ``.safetensors``) into ``backbone``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} not found (nothing is downloaded: give a local state dict)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path} does not hold a state dict")
    backbone.load_state_dict(adapt_state_dict(state, backbone), strict=False)
