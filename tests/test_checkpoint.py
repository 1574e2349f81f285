from pathlib import Path

import pytest
import torch

from pcbsiam.checkpoint import load_checkpoint, load_tagged, save_checkpoint, save_tagged
from pcbsiam.errors import PcbsiamError


def test_checkpoint_round_trip_and_version_rules(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", {"model": {"w": torch.ones(2)}, "epoch": 3})
    data = load_checkpoint(tmp_path / "a.pt")
    assert data["epoch"] == 3 and torch.equal(data["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left beside it

    save_tagged(tmp_path / "old.pt", "pcbsiam-checkpoint", 0, {"epoch": 1})
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 1  # older checkpoints are still read
    save_tagged(tmp_path / "new.pt", "pcbsiam-checkpoint", 7, {"epoch": 1})
    with pytest.raises(PcbsiamError, match="format 7.*upgrade pcbsiam"):
        load_checkpoint(tmp_path / "new.pt")
    save_tagged(tmp_path / "b.bundle", "pcbsiam-bundle", 1, {})
    with pytest.raises(PcbsiamError, match="not a pcbsiam training checkpoint"):
        load_checkpoint(tmp_path / "b.bundle")


def test_exact_versions_refuse_older_files_with_the_remedy(tmp_path: Path) -> None:
    save_tagged(tmp_path / "x.bin", "fmt", 1, {"v": 1})
    assert load_tagged(tmp_path / "x.bin", "fmt", 1, "thing", exact=True)["v"] == 1
    with pytest.raises(PcbsiamError, match="thing of format 1.*reads format 2: redo it"):
        load_tagged(tmp_path / "x.bin", "fmt", 2, "thing", exact=True, remedy="redo it")
    with pytest.raises(PcbsiamError, match="thing .* not found"):
        load_tagged(tmp_path / "missing.bin", "fmt", 1, "thing")
