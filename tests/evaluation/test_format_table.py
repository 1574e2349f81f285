"""The plain-text metrics table prints every row label whole."""

from __future__ import annotations

from pcbsiam.evaluation.evaluate import format_table


def test_per_type_recall_labels_are_not_cut() -> None:
    by_type = {t: {"recall": 0.5} for t in ("open", "spurious_copper")}
    table = format_table({"model": {"accuracy": 0.9, "by_type": by_type}, "classical": {"accuracy": 0.8}})
    lines = table.splitlines()
    assert any(line.startswith("recall spurious_copper ") for line in lines)
    row = next(line for line in lines if line.startswith("recall spurious_copper"))
    assert row.split()[-2:] == ["0.5000", "-"]
    assert len({len(line) for line in lines}) == 1  # the columns line up
