"""The progress switch: library bars show on a terminal and stay silent with -q or in a log file."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from pcbsiam import progress


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("tty", "quiet", "shown"), [(True, False, True), (True, True, False), (False, False, False)])
def test_bars_show_on_a_terminal_only_and_never_with_quiet(
    monkeypatch: pytest.MonkeyPatch, tty: bool, quiet: bool, shown: bool
) -> None:
    err = FakeTerminal() if tty else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    before = progress.set_quiet(quiet)
    try:
        with progress.bar(3, "score", "patch") as b:
            b.update(3)
    finally:
        progress.set_quiet(before)
    assert ("score" in err.getvalue()) is shown


def test_the_classical_scorer_reports_its_boards(monkeypatch: pytest.MonkeyPatch, tiny_deeppcb: Path) -> None:
    from pcbsiam.data.crops import PatchSpec
    from pcbsiam.evaluation.evaluate import classical_scorer, load_subset

    data = load_subset(tiny_deeppcb, "trainval.txt", "all", None, PatchSpec(patch=64))
    err = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", err)
    scores = classical_scorer()(data.store, data.index)
    assert len(scores) == len(data.index) and "classical" in err.getvalue() and "board" in err.getvalue()
