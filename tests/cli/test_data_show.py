"""``pcbsiam data show``: the items it draws, and a sentence (exit status 2) for a name that is not one."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pcbsiam.cli.data import choose_items
from pcbsiam.data.sources import read_boards
from pcbsiam.errors import ConfigError
from tests.conftest import run_cli


def test_an_unknown_name_is_a_sentence_naming_the_items(
    tiny_deeppcb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    png = tmp_path / "show.png"
    code, out, err = run_cli(capsys, "data", "show", "--data", tiny_deeppcb, "--png", png, "--name", "nosuch")
    assert code == 2 and out == ""
    assert err.startswith("pcbsiam: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "no item named 'nosuch'" in err and "8 items" in err and "12000000" in err
    assert not png.exists()
    code, _, err = run_cli(capsys, "data", "show", "--data", tiny_deeppcb, "--png", png, "--name", "1200000")
    assert code == 2 and "closest" in err and "12000000" in err  # a near miss: the close names
    code, _, err = run_cli(capsys, "data", "show", "--data", tiny_deeppcb, "--png", png, "--n", "0")
    assert code == 2 and "--n must be at least 1" in err


def test_every_named_item_is_drawn(tiny_deeppcb: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    one, three = tmp_path / "one.png", tmp_path / "three.png"
    assert run_cli(capsys, "data", "show", "--data", tiny_deeppcb, "--out", one, "--n", "1")[0] == 0
    names = ["13000001", "12000009", "12000000"]  # more than the default --n 2
    code, out, _ = run_cli(
        capsys, "data", "show", "--data", tiny_deeppcb, "--out", three, *(f"--name={n}" for n in names)
    )
    assert code == 0 and out.strip() == str(three)
    with Image.open(one) as a, Image.open(three) as b:
        assert b.size[0] == a.size[0] and b.size[1] == pytest.approx(3 * a.size[1], rel=0.02)  # one row per item


def test_choose_items(tiny_deeppcb: Path) -> None:
    pairs = read_boards(tiny_deeppcb).pairs
    assert [p.name for p in choose_items(pairs, None, 2, "x")] == [p.name for p in pairs[:2]]
    chosen = choose_items(pairs, ["13000002", "12000001", "13000002"], 1, "x")
    assert [p.name for p in chosen] == ["13000002", "12000001"]  # in the order given, once each
    with pytest.raises(ConfigError, match=r"^the split S has no item named 'a', 'b'; it has 8 items \(e\.g\. 12000000"):
        choose_items(pairs, ["a", "12000001", "b"], 2, "the split S")
