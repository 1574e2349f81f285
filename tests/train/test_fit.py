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


def test_val_fraction_0_trains_on_every_item_and_keeps_the_last_epoch(synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}", "data.val_fraction=0"])
    summary = fit(cfg, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == 24
    records = map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["val_accuracy"] for r in epochs] == [None, None] and all(r["val_patches"] == 0 for r in epochs)
    assert summary["best"]["epoch"] == 1  # no validation: the last epoch is the model
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"] if k != "threshold")
    assert float(best["model"]["threshold"]) == pytest.approx(epochs[-1]["threshold"])
    assert (tmp_path / "run" / "learning_curve.png").is_file()
    # calibrated, it remembers that no item was kept out, and evaluation says what its figures are
    from pcbsiam.evaluation.evaluate import calibrate_model, evaluate_models

    bundle = calibrate_model(tmp_path / "run", synth_root, max_patches=64)
    assert bundle.calibration["val_items"] == [] and bundle.calibration["subset"] == "train"  # every item
    path = bundle.save(tmp_path / "m.bundle")
    result, _ = evaluate_models([path], synth_root, max_patches=64)
    report = result["models"]["m"]
    assert report["subset"] == "all" and any("trained without validation items" in n for n in report["notes"])


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


def test_check_resume_allows_only_settings_that_leave_the_run_as_it_is() -> None:
    from pcbsiam.train.fit import RESUME_MAY_CHANGE, check_resume

    saved = load_config("tiny", ["model.num_classes=4"]).to_dict()
    allowed = [
        "train.device=cpu",
        "train.amp=false",
        "train.cpu_amp=true",
        "train.log_every=3",
        "train.checkpoint_every=7",
    ]
    allowed += ["data.workers=2", "data.cache_dir=/tmp/cache", "data.root=/elsewhere"]
    check_resume(saved, load_config("tiny", allowed), epochs_done=1)  # num_classes is derived: not compared
    assert {o.split("=")[0] for o in allowed} | {"train.epochs"} == set(RESUME_MAY_CHANGE)
    for change in ("model.backbone=resnet34", "data.split_seed=7", "train.lr=0.5", "train.seed=3", "data.patch=32"):
        with pytest.raises(ConfigError, match=f"cannot change {change.split('=')[0]} "):
            check_resume(saved, load_config("tiny", [change]), epochs_done=1)
    with pytest.raises(ConfigError, match="cannot change model.embedding_dim, train.margin of the run"):
        check_resume(saved, load_config("tiny", ["train.margin=0.3", "model.embedding_dim=8"]), epochs_done=1)
    with pytest.raises(ConfigError, match="train.epochs .* train.scheduler=cosine"):
        check_resume(saved, load_config("tiny", ["train.epochs=4"]), epochs_done=1)
    constant = load_config("tiny", ["model.num_classes=4", "train.scheduler=none"]).to_dict()
    check_resume(constant, load_config("tiny", ["train.scheduler=none", "train.epochs=4"]), epochs_done=2)
    with pytest.raises(ConfigError, match="below the 2 epochs"):
        check_resume(constant, load_config("tiny", ["train.scheduler=none", "train.epochs=1"]), epochs_done=2)


def test_a_run_killed_before_its_first_checkpoint_starts_afresh_and_a_constant_rate_run_trains_on(
    synth_root: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {backbone: resnet50}\n")  # what the killed attempt wrote
    (run / "metrics.jsonl").write_text('{"kind": "step", "epoch": 0, "step": 0, "global_step": 1, "loss": 9.0}\n')
    (run / "checkpoints" / "best.pt").write_bytes(b"cut short")
    base = [*TINY_TRAIN, f"data.root={synth_root}", "train.scheduler=none", "train.triplets=16"]
    with pytest.raises(ConfigError, match="holds no checkpoint to resume"):
        fit(load_config("tiny", [*base, "train.epochs=1"]), run, resume=True)
    fit(load_config("tiny", [*base, "train.epochs=1"]), run)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(r.get("loss") != 9.0 for r in records)  # the killed attempt's record is gone
    assert "resnet18" in (run / "config.yaml").read_text()
    assert load_checkpoint(run / "checkpoints" / "best.pt")["epoch"] == 1
    summary = fit(load_config("tiny", [*base, "train.epochs=2"]), run, resume=True)  # more epochs: allowed
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert sorted(set(epochs)) == [0, 1] and summary["final"]["epoch"] == 1
    assert "epochs: 2" in (run / "config.yaml").read_text()
    again = fit(load_config("tiny", [*base, "train.epochs=2"]), run, resume=True)  # a finished run: its figures
    assert again["final"]["val_auroc"] == summary["final"]["val_auroc"]
    assert json.loads((run / "summary.json").read_text())["final"]["epoch"] == 1
