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


class _Pickled:
    """Not a tensor nor a plain value: a safe load refuses it."""


def test_a_file_a_safe_load_refuses_is_never_advised_to_load_unsafely(tmp_path: Path) -> None:
    torch.save({"format": "pcbsiam-checkpoint", "format_version": 1, "x": _Pickled()}, tmp_path / "a.pt")
    with pytest.raises(PcbsiamError) as err:
        load_checkpoint(tmp_path / "a.pt")
    text = str(err.value)
    assert "safe load refuses" in text and "tampered" in text
    assert "weights_only" not in text and "\n" not in text
    (tmp_path / "b.pt").write_bytes(b"garbage, not a zip")
    with pytest.raises(PcbsiamError, match="not a file a safe load can read") as err:
        load_checkpoint(tmp_path / "b.pt")
    assert "weights_only" not in str(err.value)
    (tmp_path / "c.pt").write_bytes(b"")
    with pytest.raises(PcbsiamError, match="ends early"):
        load_checkpoint(tmp_path / "c.pt")
