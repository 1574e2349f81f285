from pathlib import Path

import pytest
import timm
import torch
import torchvision

from pcbsiam.errors import ConfigError
from pcbsiam.models.backbone import adapt_state_dict, create_backbone, load_backbone_weights


def test_loads_local_torchvision_state_dict(tmp_path: Path) -> None:
    tv = torchvision.models.resnet18(weights=None)  # random stand-in for an ImageNet checkpoint
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    bb = create_backbone("resnet18", (1, 2, 3, 4))
    load_backbone_weights(bb, tmp_path / "resnet18.pth")
    sd = bb.state_dict()
    assert torch.equal(sd["layer3.1.conv2.weight"], tv.state_dict()["layer3.1.conv2.weight"])
    # RGB first convolution summed over its input channels for greyscale input
    assert torch.allclose(sd["conv1.weight"], tv.state_dict()["conv1.weight"].sum(1, keepdim=True))


def test_loads_timm_names_wrapped_and_truncated(tmp_path: Path) -> None:
    src = timm.create_model("resnet34", pretrained=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "r34.pt")
    bb = create_backbone("resnet34", (1, 2))  # stages 3 and 4 unused: their keys are ignored
    load_backbone_weights(bb, tmp_path / "r34.pt")
    assert torch.equal(bb.state_dict()["layer2.0.conv1.weight"], src.state_dict()["layer2.0.conv1.weight"])


def test_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="do not fit"):
        load_backbone_weights(create_backbone("resnet50"), tmp_path / "r18.pth")
    with pytest.raises(ConfigError, match="not found"):
        load_backbone_weights(create_backbone("resnet18"), tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="missing"):
        adapt_state_dict({"fc.weight": torch.zeros(1)}, create_backbone("resnet18", (1,)))
