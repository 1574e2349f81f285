"""``pcbsiam inspect`` on a tested image of the DeepPCB layout draws (and reports) its annotation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pcbsiam.cli.main import main
from pcbsiam.data.deeppcb import annotation_of
from tests.conftest import write_deeppcb


def test_annotation_of(tiny_deeppcb: Path, tmp_path: Path) -> None:
    folder = tiny_deeppcb / "PCBData" / "group12000" / "12000"
    assert annotation_of(folder / "12000001_test.jpg") == folder.parent / "12000_not" / "12000001.txt"
    assert annotation_of(folder / "12000001_temp.jpg") is None  # a template is not annotated
    assert annotation_of(tmp_path / "board_test.png") is None  # not in the layout


def test_single_inspect_draws_the_sibling_annotation(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pcbsiam.viz.overlay as overlay

    write_deeppcb(tmp_path / "d", {"12000000": [(10, 10, 40, 40, 1), (100, 100, 130, 120, 3)]}, size=192)
    folder = tmp_path / "d" / "PCBData" / "group12000" / "12000"
    seen = []
    real = overlay.render_overlay
    monkeypatch.setattr(overlay, "render_overlay", lambda *a, **k: seen.append(k.get("truth")) or real(*a, **k))
    argv = ["inspect", "--model", tiny_bundle, "--out", tmp_path / "o", "--tested", folder / "12000000_test.jpg"]
    assert main([str(a) for a in [*argv, "--template", folder / "12000000_temp.jpg"]]) == 0
    capsys.readouterr()
    assert np.array_equal(seen[0], [[10, 10, 40, 40, 1], [100, 100, 130, 120, 3]])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["annotation"] == str(folder.parent / "12000_not" / "12000000.txt")
