import pytest
import torch

from pcbsiam.config import ModelConfig
from pcbsiam.errors import ConfigError
from pcbsiam.models import build_model
from pcbsiam.models.backbone import BACKBONES, create_backbone
from pcbsiam.models.paper import SiameseFusionNet

EXPECTED_CHANNELS = {
    "resnet18": [64, 128, 256, 512],
    "resnet34": [64, 128, 256, 512],
    "resnet50": [256, 512, 1024, 2048],
    "resnet101": [256, 512, 1024, 2048],
}


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_embeds_unit_vectors(name: str) -> None:
    model = build_model(ModelConfig(backbone=name, hidden_dim=64, embedding_dim=16, num_classes=5)).eval()
    assert model.backbone.feature_info.channels() == EXPECTED_CHANNELS[name]
    assert model.head.fc1.in_features == sum(EXPECTED_CHANNELS[name])
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.embedding.shape == (2, 16) and out.logits.shape == (2, 5)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(2), atol=1e-5)


@pytest.mark.parametrize("scales", [[1], [4], [1, 2], [2, 3, 4], [1, 3, 4], [1, 2, 3], [1, 2, 4], [1, 2, 3, 4]])
def test_scale_subsets_size_the_head(scales: list[int]) -> None:
    model = build_model(ModelConfig(backbone="resnet18", scales=scales, hidden_dim=32, embedding_dim=8))
    assert model.head.fc1.in_features == sum(EXPECTED_CHANNELS["resnet18"][s - 1] for s in scales)
    assert model.embed(torch.randn(3, 1, 32, 32)).shape == (3, 8)


@pytest.mark.parametrize("dim", [8, 16, 32, 64, 128])
def test_embedding_sizes(dim: int) -> None:
    model = SiameseFusionNet(ModelConfig(backbone="resnet18", hidden_dim=32, embedding_dim=dim))
    assert model.embed(torch.randn(2, 1, 32, 32)).shape == (2, dim)


def test_bad_settings_are_sentences() -> None:
    with pytest.raises(ConfigError, match="scales"):
        create_backbone("resnet18", ())
    with pytest.raises(ConfigError, match="subset"):
        create_backbone("resnet18", (5,))
    with pytest.raises(ConfigError, match="unknown backbone"):
        create_backbone("vgg16")


def test_distance_and_threshold_buffer_travel_in_state_dict() -> None:
    m = SiameseFusionNet(ModelConfig(backbone="resnet18", hidden_dim=16, embedding_dim=8))
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(m.distance(a, b), torch.tensor([2**0.5, 0.0]))
    with pytest.raises(RuntimeError, match="calibrate"):
        m.decide(torch.tensor([0.3]))
    m.threshold.fill_(0.5)
    state = m.state_dict()
    assert float(state["threshold"]) == 0.5
    m2 = SiameseFusionNet(m.cfg)
    m2.load_state_dict(state)
    assert m2.decide(torch.tensor([0.4, 0.6])).tolist() == [False, True]
