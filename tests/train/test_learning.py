"""Short trainings on synthetic boards that must learn something (CPU, about a minute each)."""

import json
from pathlib import Path

import pytest

from pcbsiam.config import load_config
from pcbsiam.data.synth import write_dataset
from pcbsiam.train.fit import fit

SHORT = [
    "model.backbone=resnet18",
    "model.hidden_dim=128",
    "model.embedding_dim=16",
    "model.input_size=64",
    "data.patch=64",
    "data.val_fraction=0.25",
    "data.register=true",
    "train.batch_size=16",
    "train.epochs=1",
    "train.val_max_patches=400",
    "train.lr=0.001",
    "train.augment=true",
    "train.ref_shift=1",
    "train.checkpoint_every=1000",
]


@pytest.fixture(scope="module")
def boards48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth48")
    write_dataset(root, boards=48, seed=5, size=256, groups=4)
    return root


@pytest.mark.parametrize(
    "mode, items, least_auroc",
    [
        ("paper", ["train.triplets=800"], 0.65),
        ("stack", ["train.pairs=1600"], 0.75),
        ("stack", ["train.pairs=1600", "train.focal_gamma=2"], 0.75),
    ],
    ids=["paper", "stack", "stack-focal"],
)
def test_short_training_beats_chance(
    boards48: Path, tmp_path: Path, mode: str, items: list[str], least_auroc: float
) -> None:
    cfg = load_config("tiny", [*SHORT, f"model.mode={mode}", *items, f"data.root={boards48}"])
    summary = fit(cfg, tmp_path / mode)
    epoch = [json.loads(x) for x in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()][-1]
    assert epoch["kind"] == "epoch" and epoch["val_patches"] >= 150
    # chance is an AUROC of 0.5 whatever the class balance
    assert summary["best"]["val_auroc"] >= least_auroc, summary["best"]
