from pathlib import Path

import numpy as np
import pytest
import torch

from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.errors import PcbsiamError
from tests.conftest import board, make_tiny_bundle


def test_round_trip_keeps_weights_threshold_and_boards(tmp_path: Path) -> None:
    path = make_tiny_bundle(tmp_path / "a.bundle", threshold=0.37, boards={"b1": board(2, 96)})
    b = load_bundle(path)
    assert b.threshold == pytest.approx(0.37)
    assert np.array_equal(b.boards["b1"], board(2, 96))
    assert b.groups == ["g1", "g2"] and b.cfg.model.embedding_dim == 8
    x = torch.randn(2, 1, 32, 32)
    assert torch.allclose(load_bundle(path).model.embed(x), b.model.embed(x))


def test_incompatible_or_foreign_files(tmp_path: Path) -> None:
    path = make_tiny_bundle(tmp_path / "a.bundle")
    data = torch.load(path, weights_only=True)
    data["format_version"] = 99
    torch.save(data, tmp_path / "new.bundle")
    with pytest.raises(PcbsiamError, match="format 99.*re-run `pcbsiam calibrate`"):
        load_bundle(tmp_path / "new.bundle")
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(PcbsiamError, match="not a pcbsiam bundle"):
        load_bundle(tmp_path / "other.pt")
    (tmp_path / "junk.bundle").write_bytes(b"junk")
    with pytest.raises(PcbsiamError, match="cannot be read"):
        load_bundle(tmp_path / "junk.bundle")
    with pytest.raises(PcbsiamError, match="not found"):
        load_bundle(tmp_path / "missing.bundle")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda d: d["model"].pop("threshold"), "weights do not fit its config .* 1 missing"),
        (lambda d: d["model"].update(extra=torch.zeros(1)), "weights do not fit its config .* 1 unexpected"),
        (lambda d: d["config"]["model"].update(embedding_dim=16), "weights do not fit .* 3 of another shape"),
        (lambda d: d.pop("config"), "a bundle without config"),
        (lambda d: d.pop("groups"), "a bundle without groups"),
        (lambda d: d["config"]["train"].update(lr="fast"), "config is invalid .*train.lr must be a number"),
    ],
    ids=["missing-key", "unexpected-key", "other-shape", "no-config", "no-groups", "bad-config"],
)
def test_a_tagged_bundle_whose_contents_do_not_fit_is_refused_with_the_remedy(
    tmp_path: Path, change, says: str
) -> None:
    data = torch.load(make_tiny_bundle(tmp_path / "a.bundle"), weights_only=True)
    change(data)
    torch.save(data, tmp_path / "bad.bundle")
    with pytest.raises(PcbsiamError, match=f"{says}.*re-run `pcbsiam calibrate`"):
        load_bundle(tmp_path / "bad.bundle")


def test_how_a_bundle_is_applied_can_change_at_load_time_and_nothing_else(tmp_path: Path) -> None:
    from pcbsiam.errors import ConfigError

    path = make_tiny_bundle(tmp_path / "g.bundle")
    assert load_bundle(path).model.cfg.gate == -1
    gated = load_bundle(path, inference={"model.gate": 0, "model.gate_margin": None})
    assert gated.model.cfg.gate == gated.cfg.model.gate == 0 and gated.cfg.model.gate_margin == 4
    with pytest.raises(ConfigError, match="model.gate.*not model.band"):
        load_bundle(path, inference={"model.band": 2})
    with pytest.raises(ConfigError, match="model.gate"):
        load_bundle(path, inference={"model.gate": -3})


def test_other_test_time_views_than_the_calibration_saw_are_applied_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pcbsiam.errors import ConfigError

    path = make_tiny_bundle(tmp_path / "s.bundle", overrides=["model.mode=stack"])
    with caplog.at_level("WARNING", logger="pcbsiam.deploy.bundle"):
        assert load_bundle(path).cfg.model.views == 1 and not caplog.records
        load_bundle(path, inference={"model.views": 4}, recalibrating=True)  # a new threshold comes: no warning
        viewed = load_bundle(path, inference={"model.views": 4})
    assert viewed.model.cfg.views == 4
    assert len(caplog.records) == 1 and "calibrate it with --views 4" in caplog.records[0].getMessage()
    with pytest.raises(ConfigError, match="not 'paper'"):
        load_bundle(make_tiny_bundle(tmp_path / "p.bundle"), inference={"model.views": 2})


def test_a_half_bundle_is_half_the_size_and_loads_as_float32(tmp_path: Path) -> None:
    full = load_bundle(make_tiny_bundle(tmp_path / "full.bundle", threshold=0.123456789))
    half_path = full.save(tmp_path / "half.bundle", half=True)
    assert half_path.stat().st_size < 0.6 * (tmp_path / "full.bundle").stat().st_size
    half = load_bundle(half_path)
    assert all(p.dtype == torch.float32 for p in half.model.parameters())
    assert half.threshold == full.threshold  # the threshold stays float32
    x = torch.rand(4, 1, 32, 32)
    with torch.inference_mode():
        a, b = full.model.encode(x), half.model.encode(x)
    assert torch.allclose(a, b, atol=5e-3) and not torch.equal(a, b)
