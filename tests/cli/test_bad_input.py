"""The corpus of bad input: every case is one line ``pcbsiam: error: ...`` on stderr and exit status 2,
never a traceback, and nothing is written (the folder every case works in is unchanged afterwards).

Each row is an ``argv`` template whose ``{names}`` are the paths of :class:`Corpus` and a piece of the
sentence it must say. Two rows also run as a real ``pcbsiam`` process.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image

from pcbsiam.cli.main import main
from tests.conftest import board, make_tiny_bundle, write_deeppcb


class NotTensors:
    """An object a safe ``torch.load`` refuses to unpickle."""


@dataclass(frozen=True)
class Corpus:
    """Where the cases point: a folder holding every file they read and every output they name."""

    root: Path

    def paths(self) -> dict[str, str]:
        """``{tmp}`` and each entry of the folder by its name without suffixes (``{bundle}``, ``{run}``)."""
        return {"tmp": str(self.root)} | {p.name.split(".")[0]: str(p) for p in self.root.iterdir()}


def _craft_bundles(root: Path, bundle: Path) -> None:
    """Bundles with the right format tag but wrong contents, and files that are not bundles."""
    data = torch.load(bundle, weights_only=True)
    del data["model"]["threshold"]
    torch.save(data, root / "wrong_keys.bundle")
    data = torch.load(bundle, weights_only=True)
    data["config"]["model"]["backbone"] = "resnet34"
    torch.save(data, root / "wrong_shapes.bundle")
    data = torch.load(bundle, weights_only=True)
    del data["config"]
    torch.save(data, root / "no_config.bundle")
    torch.save({"format": "pcbsiam-bundle", "format_version": 1, "x": NotTensors()}, root / "pickled.bundle")
    (root / "junk.bundle").write_bytes(b"not a torch file")
    (root / "empty.bundle").write_bytes(b"")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path) -> Corpus:
    root = tmp_path_factory.mktemp("corpus")
    items = {str(12000000 + i): [(10, 10, 22, 22, 1)] if i % 2 else [] for i in range(4)}
    write_deeppcb(root / "data", items, group="12000")
    write_deeppcb(root / "data", {str(13000000 + i): [] for i in range(4)}, group="13000")
    (root / "missing.txt").write_text("group12000/12000/99999999.jpg group12000/12000_not/99999999.txt\n")
    Image.fromarray(board(1, 192)).save(root / "image.png")
    bundle = make_tiny_bundle(root / "bundle.bundle")
    _craft_bundles(root, bundle)
    (root / "afile").write_text("a file, where a folder is meant\n")
    (root / "epochs_text.yaml").write_text('train:\n  epochs: "ten"\n')
    (root / "top_list.yaml").write_text("- model\n- train\n")
    (root / "section_text.yaml").write_text("train: fast\n")
    (root / "section_list.yaml").write_text("train: [1, 2]\n")
    (root / "broken.yaml").write_text("train: [1, 2\n")
    shutil.copytree(tiny_run, root / "run", ignore=shutil.ignore_patterns("*.png"))
    (root / "unstarted").mkdir()
    shutil.copy(tiny_run / "config.yaml", root / "unstarted" / "config.yaml")  # killed before its first checkpoint
    return Corpus(root)


TRAIN = "train --config tiny --data {data} --out {tmp}/new_run --set"
RESUME = "train --config {run}/config.yaml --out {run} --resume"
INSPECT = "inspect --model {bundle} --tested {image} --template {image}"

#: (id, argv template, a piece of the sentence)
CASES = [
    # 1. a resume that would change the run, or has nothing to resume
    ("resume-backbone", f"{RESUME} --set model.backbone=resnet34", "cannot change model.backbone"),
    ("resume-split-seed", f"{RESUME} --set data.split_seed=7", "cannot change data.split_seed"),
    ("resume-lr", f"{RESUME} --set train.lr=0.5", "cannot change train.lr"),
    ("resume-epochs-cosine", f"{RESUME} --set train.epochs=5", "train.scheduler=cosine"),
    ("resume-other-data", f"{RESUME} --data {{data}}", "no longer gives the split"),
    ("resume-no-checkpoint", "train --config tiny --data {data} --out {unstarted} --resume", "no checkpoint"),
    ("train-into-a-run", "train --config tiny --data {data} --out {run}", "already holds a run"),
    # 2. values of the wrong type or out of range, in a file or --set
    ("file-epochs-text", "train --config {epochs_text} --data {data} --out {tmp}/new_run", "train.epochs must be an"),
    ("set-lr-text", f"{TRAIN} train.lr=abc", "train.lr must be a number; got 'abc'"),
    ("set-patch-text", f"{TRAIN} data.patch=abc", "data.patch must be an integer"),
    ("set-scales-text", f"{TRAIN} model.scales=abc", "model.scales must be a list of integers"),
    ("set-register-int", f"{TRAIN} data.register=1", "data.register must be a boolean"),
    ("set-holdout-text", f"{TRAIN} data.holdout_groups=group12000", "data.holdout_groups must be a list of strings"),
    ("file-top-list", "train --config {top_list} --out {tmp}/new_run", "its top level is a list"),
    ("file-section-text", "train --config {section_text} --out {tmp}/new_run", "section 'train' must be a mapping"),
    ("file-section-list", "train --config {section_list} --out {tmp}/new_run", "section 'train' must be a mapping"),
    ("file-broken-yaml", "train --config {broken} --out {tmp}/new_run", "is not valid YAML"),
    ("set-unknown-key", f"{TRAIN} train.lrate=0.1", "unknown setting(s) train.lrate"),
    ("set-val-fraction", f"{TRAIN} data.val_fraction=2", "data.val_fraction must be at least 0 and below 1"),
    ("set-stride-0", f"{TRAIN} data.stride=0", "data.stride must be >= 1"),
    ("set-patch-0", f"{TRAIN} data.patch=0", "data.patch must be >= 1"),
    ("set-patch-negative", f"{TRAIN} data.patch=-5", "data.patch must be >= 1"),
    ("set-lr-0", f"{TRAIN} train.lr=0", "train.lr must be > 0"),
    ("set-lr-negative", f"{TRAIN} train.lr=-0.1", "train.lr must be > 0"),
    ("set-batch-0", f"{TRAIN} train.batch_size=0", "train.batch_size must be >= 1"),
    ("set-scheduler", f"{TRAIN} train.scheduler=cosin", "train.scheduler must be one of cosine, none"),
    ("set-holdout-unknown", f"{TRAIN} data.holdout_groups=[nope]", "unknown group(s) ['nope']"),
    ("set-device-absent", f"{TRAIN} train.device=cuda:99", "device 'cuda:99'"),
    ("set-device-unknown", f"{TRAIN} train.device=bogus", "unknown device 'bogus'"),
    ("inspect-device", f"{INSPECT} --out {{tmp}}/o --device bogus", "unknown device 'bogus'"),
    # options out of range, or a file where a folder is meant
    ("inspect-overlap-high", f"{INSPECT} --out {{tmp}}/o --overlap 1.5", "--overlap: must be in [0.0, 1.0)"),
    ("inspect-overlap-negative", f"{INSPECT} --out {{tmp}}/o --overlap -0.5", "--overlap: must be in"),
    ("inspect-out-file", f"{INSPECT} --out {{afile}}", "afile is a file; give a folder"),
    ("inspect-detector-missing", f"{INSPECT} --out {{tmp}}/o --detector nosuchfile", "neither 'classical' nor an"),
    ("evaluate-out-file", "evaluate --model {bundle} --data {data} --out {afile}", "is a file; give a folder"),
    ("experiment-out-file", "experiment --grid cpu --data {data} --out {afile}", "is a file; give a folder"),
    ("train-out-file", "train --config tiny --data {data} --out {afile}", "is a file; give a folder"),
    ("synth-out-file", "data synth --out {afile} --boards 2", "is a file; give a folder"),
    ("demo-out-inside-file", "demo --out {afile}/demo", "which is a file"),
    ("calibrate-bundle-folder", "calibrate --model {run} --data {data} --bundle {tmp}", "is a folder; give a file"),
    ("serve-port-high", "serve --model {bundle} --port 99999", "--port: must be in [1, 65535]"),
    ("serve-port-0", "serve --model {bundle} --port 0", "--port: must be in [1, 65535]"),
    ("serve-port-negative", "serve --model {bundle} --port -1", "--port: must be in [1, 65535]"),
    ("serve-port-text", "serve --model {bundle} --port http", "expected int"),
    # bundles with the right tag and the wrong contents, and files that are no bundle
    ("bundle-wrong-keys", "inspect --model {wrong_keys} --tested {image} --board demo --out {tmp}/o", "fit its"),
    ("bundle-wrong-shapes", "inspect --model {wrong_shapes} --tested {image} --board demo --out {tmp}/o", "fit its"),
    ("bundle-no-config", "inspect --model {no_config} --tested {image} --board demo --out {tmp}/o", "without config"),
    ("bundle-pickled-object", "inspect --model {pickled} --tested {image} --out {tmp}/o", "safe load refuses"),
    ("bundle-junk", "inspect --model {junk} --tested {image} --board demo --out {tmp}/o", "not a file a safe load"),
    ("bundle-empty", "inspect --model {empty} --tested {image} --board demo --out {tmp}/o", "ends early"),
    # threshold policies, checked before anything is loaded
    ("calibrate-policy", "calibrate --model {run} --data {data} --policy bogus", "Unknown threshold policy 'bogus'"),
    ("calibrate-recall-0", "calibrate --model {run} --data {data} --policy recall:0", "between 0 and 1"),
    ("baseline-recall-high", "baseline --data {data} --policy recall:1.5", "between 0 and 1"),
    # 3. splits with no readable item, and split files that do not exist
    ("stats-all-missing", "data stats --data {data} --split {missing}", "has no readable item (1 skipped"),
    ("batch-all-missing", "inspect --model {bundle} --batch --data {data} --split {missing} --out {tmp}/o", "skipped"),
    ("stats-no-split-file", "data stats --data {data} --split nosuch.txt", "split file not found"),
    ("batch-no-split-file", "inspect --model {bundle} --batch --data {data} --split no.txt --out {tmp}/o", "not found"),
]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _argv(template: str, corpus: Corpus) -> list[str]:
    return template.format(**corpus.paths()).split()


@pytest.mark.parametrize(("argv", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_sentence_and_exit_2(
    corpus: Corpus, argv: str, says: str, capsys: pytest.CaptureFixture
) -> None:
    before = _snapshot(corpus.root)
    try:
        code = main(_argv(argv, corpus))
    except SystemExit as exc:  # argparse refuses an option
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("pcbsiam: error: "), err
    assert says in err
    assert _snapshot(corpus.root) == before, "a refused command changed files"


@pytest.mark.parametrize("case", ["set-lr-text", "serve-port-high"])
def test_bad_input_in_a_real_process(corpus: Corpus, case: str) -> None:
    template, says = {c[0]: c[1:] for c in CASES}[case]
    proc = subprocess.run(
        [sys.executable, "-m", "pcbsiam.cli", *_argv(template, corpus)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("pcbsiam: error: ")
    assert says in proc.stderr


def test_the_corpus_names_every_case_once() -> None:
    assert len({c[0] for c in CASES}) == len(CASES)
