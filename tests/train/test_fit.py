import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pcbsiam.checkpoint import load_checkpoint
from pcbsiam.config import load_config
from pcbsiam.deploy.bundle import load_trained
from pcbsiam.errors import ConfigError
from pcbsiam.train.distributed import DistInfo
from pcbsiam.train.fit import epoch_order, fit
from tests.conftest import TINY_TRAIN


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pcbsiam.cli", *args]


def train_args(root: Path, out: Path, extra: list[str] = ()) -> list[str]:
    sets = [x for o in [*TINY_TRAIN, *extra] for x in ("--set", o)]
    return ["train", "--config", "tiny", "--data", str(root), "--out", str(out), *sets]


def test_fit_writes_the_run_folder(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}"])
    summary = fit(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "split.json",
        "metrics.jsonl",
        "summary.json",
        "learning_curve.png",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert {"val_accuracy", "val_auroc", "threshold", "items_per_s"} <= set(epochs[0])
    assert len([r for r in records if r["kind"] == "step"]) == 12  # 48 triplets / 8 per step x 2 epochs
    split = json.loads((run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"])
    model, cfg2, groups = load_trained(run)
    assert float(model.threshold) == pytest.approx(summary["best"]["threshold"])
    assert cfg2.model.num_classes == len(groups) == 4
    with pytest.raises(ConfigError, match="--resume"):
        fit(cfg, run)


def test_resume_after_kill_ends_where_uninterrupted_run_ends(synth_root: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    extra = ["train.epochs=2", "train.triplets=64"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(cli(*train_args(synth_root, full, extra)), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(
        cli(*train_args(synth_root, cut, extra)), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (cut / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ck = load_checkpoint(cut / "checkpoints" / "last.pt")
    assert (ck["epoch"], ck["step"]) < (2, 0), "the run finished before it could be killed"
    subprocess.run(cli(*train_args(synth_root, cut, extra), "--resume"), check=True, env=env, capture_output=True)
    a = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(cut / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ends = [
        [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "epoch"]
        for d in (full, cut)
    ]
    assert [r["val_auroc"] for r in ends[0]] == [r["val_auroc"] for r in ends[1]]
    steps = [r for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    assert [r["global_step"] for r in steps] == list(range(1, 17))  # no step logged twice after the resume


def test_epoch_order_shares_triplets_between_processes() -> None:
    shares = [epoch_order(50, 3, 0, 4, DistInfo(r, 2, r, torch.device("cpu"))) for r in range(2)]
    assert len(shares[0]) == len(shares[1]) == 7
    flat = [np.concatenate(s) for s in shares]
    assert not set(flat[0][:25]) & set(flat[1][:25])
    assert set(np.concatenate(flat)) == set(range(50))


def test_two_processes_with_torchrun(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "pcbsiam.cli",
        *train_args(synth_root, out),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert 0.0 <= summary["best"]["val_auroc"] <= 1.0
    steps = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "step"]
    assert len(steps) == 6  # each of 2 processes takes 8 of every 16 triplets: 3 steps an epoch
    assert not list(out.glob("**/*.tmp*"))


def test_validation_sample_is_the_same_for_every_training_seed(synth_root: Path) -> None:
    from pcbsiam.train.fit import prepare_data, validation_sample

    cfg = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "train.val_max_patches=5"])
    data = prepare_data(cfg)
    assert len(data.val_index) > 5 and len(data.train_index) > 5
    cfg2 = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "train.val_max_patches=5", "train.seed=7"])
    calib0, val0 = validation_sample(cfg, data)
    calib7, val7 = validation_sample(cfg2, data)
    assert len(val0) == 5
    assert np.array_equal(val0.rows, val7.rows)
    assert not np.array_equal(calib0.rows, calib7.rows)
