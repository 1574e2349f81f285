import re

import pytest
import torch

from pcbsiam.config import ModelConfig
from pcbsiam.errors import ConfigError
from pcbsiam.models import build_model, create_model
from pcbsiam.models.diff import ReferenceAwareNet


@pytest.mark.parametrize("scales", [[1], [2, 4], [1, 2, 3, 4]])
def test_scores_pairs_and_sizes_head_from_feature_info(scales: list[int]) -> None:
    model = build_model(ModelConfig(mode="diff", backbone="resnet18", scales=scales, hidden_dim=16))
    assert isinstance(model, ReferenceAwareNet)
    channels = [64, 128, 256, 512]
    assert model.head.fc1.in_features == 2 * sum(channels[s - 1] for s in scales)
    t, r = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    scores = model(t, r)
    assert scores.shape == (3,)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.score_pairs(t, r), model.compare(model.encode(t), model.encode(r)), atol=1e-5)


def test_identical_patches_give_the_same_score_whatever_the_content() -> None:
    model = create_model(ModelConfig(mode="diff", backbone="resnet18", hidden_dim=16)).eval()
    x, y = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        # the head sees only |f_t - f_r|: a patch compared with itself always scores the same
        assert torch.allclose(model(x, x), model(y, y), atol=1e-6)


def test_unknown_mode() -> None:
    with pytest.raises(ConfigError, match="mode"):
        create_model(ModelConfig(mode="nope"))


def test_stack_mode_scores_pairs_and_encode_is_identity() -> None:
    from pcbsiam.models.stack import StackedPairNet

    model = create_model(ModelConfig(mode="stack", backbone="resnet18", scales=[2, 3], hidden_dim=16)).eval()
    assert isinstance(model, StackedPairNet)
    assert model.backbone.conv1.in_channels == 3
    t, r = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    assert model.encode(r) is r
    with torch.no_grad():
        assert model.score_pairs(t, r).shape == (2,)
        assert torch.allclose(model.compare(t, r), model(t, r))


def test_stack_mode_with_band_feeds_a_fourth_channel_that_changes_the_score() -> None:
    model = create_model(ModelConfig(mode="stack", backbone="resnet18", scales=[2, 3], hidden_dim=16, band=2)).eval()
    assert model.backbone.conv1.in_channels == 4
    r = torch.full((1, 1, 32, 32), -1.0)
    t = r.clone()
    t[..., 10:14, 10:14] = 2.0  # bright spot where the reference is dark: defect pixels in channel 4
    x = model.channels(t, r)
    assert x.shape == (1, 4, 32, 32) and x[0, 3].sum() == 16
    with torch.no_grad():
        assert model(t, r).shape == (1,)


def test_fine_band_adds_a_fifth_channel_that_sees_bites_the_band_does_not() -> None:
    cfg = ModelConfig(mode="stack", backbone="resnet18", scales=[2, 3], hidden_dim=16, band=2, fine_band=1)
    model = create_model(cfg).eval()
    assert model.backbone.conv1.in_channels == 5
    r = torch.full((1, 1, 32, 32), -1.0)
    r[..., 8:24, 8:24] = 2.0  # a copper square in the reference
    t = r.clone()
    t[..., 8:10, 14:18] = -1.0  # a bite 2 px deep into its top edge: inside a 2 px band, beyond a 1 px one
    x = model.channels(t, r)
    assert x.shape == (1, 5, 32, 32)
    assert x[0, 3].sum() == 0 and x[0, 4].sum() == 4  # the bite's inner row only
    with torch.no_grad():
        assert model(t, r).shape == (1,)


@pytest.mark.parametrize(
    ("preset", "overrides", "says"),
    [
        ("cpu-stack", ["model.fine_band=1"], "needs model.band above it"),
        ("cpu-stack-band", ["model.band=2", "model.fine_band=2"], "needs model.band above it"),
        ("cpu-stack-band", ["model.band=0", "model.fine_band=1"], "needs model.band above it"),
        ("cpu-stack-band", ["model.fine_band=-1"], "model.fine_band must be >= 0"),
    ],
)
def test_fine_band_is_checked_with_the_config(preset: str, overrides: list[str], says: str) -> None:
    from pcbsiam.config import load_config

    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(preset, overrides)


def test_band_needs_the_stack_mode() -> None:
    from pcbsiam.config import load_config

    with pytest.raises(ConfigError, match="needs model.mode=stack"):
        load_config("tiny", ["model.band=2"])
    with pytest.raises(ConfigError, match="needs model.mode=stack"):
        load_config("tiny", ["model.fine_band=1"])
    assert load_config("cpu-stack-band", ["model.fine_band=1"]).model.fine_band == 1
    with pytest.raises(ConfigError, match="band_level"):
        load_config("cpu-stack-band", ["model.band_level=1.5"])
    assert load_config("cpu-stack-band").model.band == 2


def test_stack_views_average_the_turned_pairs_and_are_blind_to_a_turn() -> None:
    from pcbsiam.data.transforms import DIHEDRAL_VIEWS, dihedral_tensor

    torch.manual_seed(0)
    cfg = ModelConfig(mode="stack", backbone="resnet18", scales=[2, 3], hidden_dim=16, band=2)
    model = create_model(cfg).eval()
    t, r = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        one = model.score_pairs(t, r)
        assert torch.equal(model(t, r), one)  # one view: the plain forward pass
        cfg.views = 4
        four = model.score_pairs(t, r)
        by_hand = torch.stack([model(dihedral_tensor(t, *v), dihedral_tensor(r, *v)) for v in DIHEDRAL_VIEWS[:4]])
        assert torch.allclose(four, by_hand.mean(0), atol=1e-6) and not torch.allclose(four, one, atol=1e-4)
        assert torch.allclose(model.compare(model.encode(t), model.encode(r)), four)  # the inspector's path
        cfg.views = 8  # all eight symmetries: a quarter turn of the pair changes nothing
        turned = model.score_pairs(torch.rot90(t, 1, (2, 3)), torch.rot90(r, 1, (2, 3)))
        assert torch.allclose(turned, model.score_pairs(t, r), atol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["model.mode=stack", "model.views=3"], "model.views must be one of 1, 2, 4, 8"),
        (["model.mode=paper", "model.views=2"], "needs a mode whose network sees both patches together (stack)"),
        (["model.mode=diff", "model.views=2"], "not 'diff'"),
    ],
)
def test_views_are_checked_with_the_config(overrides: list[str], says: str) -> None:
    from pcbsiam.config import load_config

    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config("tiny", overrides)
