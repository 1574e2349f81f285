"""Shared fixtures: tiny hand-made boards in the DeepPCB and paper layouts, the shared DeepPCB data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DEEPPCB = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "DeepPCB"


def run_cli(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str, str]:
    """Run ``pcbsiam ARGS`` in this process: (exit code, stdout, stderr); argparse's refusals give their code."""
    from pcbsiam.cli.main import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse refuses an option
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def board(seed: int, size: int = 96) -> np.ndarray:
    """A (size, size) uint8 board of random white rectangles on black."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    for _ in range(8):
        y, x = rng.integers(0, size - 12, 2)
        h, w = rng.integers(3, 12, 2)
        img[y : y + h, x : x + w] = 255
    return img


def write_deeppcb(
    root: Path,
    items: dict[str, list[tuple[int, int, int, int, int]]],
    size: int = 96,
    group: str = "12000",
    rgb: bool = False,
    sep: str = " ",
) -> Path:
    """Write a DeepPCB-layout tree with one item per name and its boxes; returns the split file."""
    base = root / "PCBData" / f"group{group}"
    (base / group).mkdir(parents=True, exist_ok=True)
    (base / f"{group}_not").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, (name, boxes) in enumerate(items.items()):
        tmpl = board(k, size)
        test = tmpl.copy()
        for x1, y1, x2, y2, _ in boxes:
            test[y1:y2, x1:x2] = 255 - test[y1:y2, x1:x2]
        for arr, suffix in ((test, "test"), (tmpl, "temp")):
            im = Image.fromarray(arr)
            (im.convert("RGB") if rgb else im).save(base / group / f"{name}_{suffix}.jpg", quality=95)
        (base / f"{group}_not" / f"{name}.txt").write_text("".join(sep.join(map(str, b)) + "\n" for b in boxes))
        lines.append(f"group{group}/{group}/{name}.jpg group{group}/{group}_not/{name}.txt")
    split = root / "PCBData" / "trainval.txt"
    with open(split, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return split


@pytest.fixture
def tiny_deeppcb(tmp_path: Path) -> Path:
    """Two groups, three items each, 96 px, boxes of 12 px; returns the root."""
    for g, base in (("12000", 12000000), ("13000", 13000000)):
        items = {str(base + i): [(10 + 20 * i, 10, 22 + 20 * i, 22, 1 + i)] for i in range(3)}
        items[str(base + 9)] = []  # a defect-free board
        write_deeppcb(tmp_path, items, group=g)
    return tmp_path


@pytest.fixture(scope="session")
def shared_deeppcb() -> Path:
    """The shared DeepPCB trainval data; tests using it are skipped where it is absent."""
    if not (SHARED_DEEPPCB / "PCBData" / "trainval.txt").is_file():
        pytest.skip(f"shared DeepPCB data not found at {SHARED_DEEPPCB}")
    return SHARED_DEEPPCB


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic 256 px boards in 4 groups, written once per session."""
    from pcbsiam.data.synth import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, boards=24, seed=11, size=256, groups=4)
    return root


#: Overrides that make a training run take seconds (patches of 64 px seen at 32 px).
TINY_TRAIN = [
    "model.backbone=resnet18",
    "model.hidden_dim=32",
    "model.embedding_dim=8",
    "model.input_size=32",
    "data.patch=64",
    "data.val_fraction=0.25",
    "train.triplets=48",
    "train.batch_size=8",
    "train.epochs=2",
    "train.val_max_patches=64",
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.warmup_steps=0",
    "train.lr=0.001",
]


def make_tiny_bundle(
    path: Path,
    threshold: float = 0.5,
    patch: int = 64,
    input_size: int = 32,
    boards: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> Path:
    """Save a calibrated bundle of an untrained tiny network (ResNet18, 32 px input, 8-d embedding);
    ``overrides`` (``model.mode=stack``, ...) give the other modes."""
    import torch

    from pcbsiam.config import load_config
    from pcbsiam.deploy.bundle import Bundle
    from pcbsiam.models import create_model

    torch.manual_seed(0)
    cfg = load_config(
        "tiny",
        [
            f"data.patch={patch}",
            f"model.input_size={input_size}",
            "model.hidden_dim=32",
            "model.embedding_dim=8",
            *overrides,
        ],
    )
    cfg.model.num_classes = 2
    model = create_model(cfg.model).eval()
    model.threshold.fill_(threshold)
    return Bundle(model, cfg, ["g1", "g2"], "accuracy", {"note": "test bundle"}, boards or {}).save(path)


@pytest.fixture
def tiny_bundle(tmp_path: Path) -> Path:
    """Path of a tiny calibrated bundle with one registered 192 px board named ``demo``."""
    return make_tiny_bundle(tmp_path / "tiny.bundle", boards={"demo": board(1, 192)})


@pytest.fixture(scope="session")
def tiny_run(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny training run folder on the synthetic boards (about 10 s)."""
    from pcbsiam.config import load_config
    from pcbsiam.train.fit import fit

    out = tmp_path_factory.mktemp("runs") / "tiny"
    fit(load_config("tiny", [*TINY_TRAIN, f"data.root={synth_root}"]), out)
    return out


@pytest.fixture(scope="module")
def one_torch_thread():  # noqa: ANN201 - a generator fixture
    """For tests that check behaviour, not speed: one thread keeps them cheap on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
