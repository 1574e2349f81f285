"""Training throughput benchmark: rows per mode and backbone, FLOPs per step."""

from __future__ import annotations

import pytest

from pcbsiam.train.bench import bench_train, format_train_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_bench_train_rows() -> None:
    rows = bench_train(
        ["resnet18"],
        ["paper", "diff", "stack"],
        input_size=32,
        batch_size=2,
        seconds=0.1,
        preset="tiny",
        peak_gflops=50.0,
    )
    assert [r["mode"] for r in rows] == ["paper", "diff", "stack"]
    for r in rows:
        assert r["items_per_s"] > 0 and r["gflop_per_step"] > 0 and r["share_of_peak"] > 0
    # a paper step embeds 3 patches per triplet, a diff step 2 per pair: more FLOPs per item
    assert rows[0]["gflop_per_step"] > rows[1]["gflop_per_step"]
    assert "| paper | resnet18 |" in format_train_table(rows)
