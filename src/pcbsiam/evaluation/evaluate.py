"""Scores of patches (the model's score or a classical defect-pixel count), calibration and reports.

Both methods go through the same functions, so every table can show them on the same patches.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.protocol import PatchIndex, subsample
from pcbsiam.data.records import SYNTHETIC_MARKER
from pcbsiam.data.sampler import split_by_image
from pcbsiam.data.sources import patches_of, read_boards, same_data
from pcbsiam.data.store import BoardStore, load_store, register_store
from pcbsiam.deploy.backends import Engine
from pcbsiam.deploy.bundle import Bundle
from pcbsiam.errors import DataError, PcbsiamError
from pcbsiam.evaluation.baseline import ClassicalComparator, tile_scores
from pcbsiam.evaluation.calibration import Calibration, choose_threshold
from pcbsiam.evaluation.metrics import binary_metrics, grouped_metrics, recall_by_type
from pcbsiam.evaluation.scoring import ReferenceCache, pair_loader, score_index
from pcbsiam.models.band import TileGate, gated_scores
from pcbsiam.progress import bar

log = logging.getLogger(__name__)

Scorer = Callable[[BoardStore, PatchIndex], np.ndarray]


@dataclass
class PatchSet:
    """Decoded boards of one subset and their protocol patches."""

    store: BoardStore
    index: PatchIndex
    subset: str


def load_subset(
    root: str | Path,
    split: str,
    subset: str,
    val_items: list[str] | None,
    spec: PatchSpec,
    cache_dir: str | None = None,
    max_patches: int | None = None,
    seed: int = 0,
) -> PatchSet:
    """Read a data set, keep one subset of its items and cut its patches as ``spec`` says.

    Args:
        subset: ``train`` (items not in ``val_items``), ``val`` (items in it) or ``all``. Without
            ``val_items`` the default whole-image split (10 %, seed 0, as in training) defines them.
        spec: the model's patch geometry: patch size and stride; with ``spec.register`` each board's
            shift is estimated so that reference crops follow it (and refined by ``spec.local_shift``).
        max_patches: keep at most this many patches (drawn once with ``seed``).

    Raises:
        DataError: the subset holds no item or no patch.
    """
    boards = read_boards(root, split)
    store = load_store(boards, cache_dir=cache_dir)
    for err in store.skipped:
        log.warning("skipped %s", err)
    if subset != "all":
        if val_items is None:
            _, val_idx = split_by_image(store.pairs, 0.1, 0)
            val_items = [store.pairs[i].name for i in val_idx]
        val = set(val_items)
        keep = [i for i, p in enumerate(store.pairs) if (p.name in val) == (subset == "val")]
        store = store.subset(keep)
    if len(store) == 0:
        raise DataError(Path(root), f"the {subset!r} subset of {split} holds no readable item")
    if spec.register:
        register_store(store, local_shift=spec.local_shift)
    index = subsample(patches_of(store, spec.patch, spec.stride), max_patches, seed)
    if len(index) == 0:
        raise DataError(Path(root), f"the {subset!r} subset of {split} gives no patch of {spec.patch} px")
    return PatchSet(store, index, subset)


def model_scorer(bundle: Bundle, device: str | torch.device = "cpu", batch_size: int = 64) -> Scorer:
    """Scores from the bundle's network: each patch against its reference crop (each distinct
    reference crop encoded once, and kept for later calls)."""
    dev = torch.device(device)
    cache = ReferenceCache()

    def score(store: BoardStore, index: PatchIndex) -> np.ndarray:
        model = bundle.model.to(dev)
        with bar(len(index), "score", "patch") as shown:
            return score_index(
                model, store, index, bundle.spec, dev, batch_size=batch_size, cache=cache, progress=shown.update
            ).scores

    return score


def engine_scorer(
    engine: Engine, batch_size: int = 64, gate: TileGate | None = None, null_score: float = 0.0
) -> Scorer:
    """Scores from an inference engine (PyTorch, ONNX Runtime fp32 or int8) on the same patches; pairs
    ``gate`` skips get ``null_score`` (as the bundle's network gives them)."""

    def score(store: BoardStore, index: PatchIndex) -> np.ndarray:
        out = []
        shown = bar(len(index), f"score ({engine.name})", "patch")
        for tested, reference, _, _ in pair_loader(store, index, engine.spec, batch_size):

            def run(keep: torch.Tensor, tested: torch.Tensor = tested, reference: torch.Tensor = reference):  # noqa: ANN202
                return torch.from_numpy(np.asarray(engine.compare(tested[keep].numpy(), reference[keep].numpy())[0]))

            scores = gated_scores(gate, tested, reference, run, null_score)
            out.append(scores.double().numpy())
            shown.update(len(tested))
        shown.close()
        return np.concatenate(out) if out else np.zeros(0)

    return score


def training_patches(
    bundle: Bundle,
    root: str | Path,
    split: str,
    val_items: list[str] | None,
    n: int = 256,
    cache_dir: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, S, S) normalised tested patches of the training items and their references (int8 calibration)."""
    data = load_subset(root, split, "train", val_items, bundle.spec, cache_dir=cache_dir, max_patches=n)
    tested, reference, _, _ = next(iter(pair_loader(data.store, data.index, bundle.spec, n)))
    return tested.numpy(), reference.numpy()


def classical_scorer(comparator: ClassicalComparator | None = None) -> Scorer:
    """Defect-pixel counts of the classical template comparison (whole board registered once)."""
    comp = comparator or ClassicalComparator(allow_unregistered=True)

    def score(store: BoardStore, index: PatchIndex) -> np.ndarray:
        out = np.zeros(len(index), dtype=np.float64)
        rows = index.rows
        boards = np.unique(rows["board"])
        shown = bar(len(boards), "classical", "board")
        for b in boards:
            sel = np.flatnonzero(rows["board"] == b)
            dmap, _ = comp.score_board(np.asarray(store.tested[b]), np.asarray(store.reference[b]))
            tiles = np.stack([rows["y"][sel], rows["x"][sel], rows["h"][sel], rows["w"][sel]], axis=1)
            out[sel] = tile_scores(dmap, tiles)
            shown.update()
        shown.close()
        return out

    return score


def calibrate_scores(scores: np.ndarray, labels: np.ndarray, policy: str) -> Calibration:
    """The threshold a policy picks; a warning sentence when the data has one class only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the sentence is kept in Calibration.warning
        cal = choose_threshold(scores, labels, policy)
    if cal.warning:
        log.warning(cal.warning)
    return cal


def set_threshold(bundle: Bundle, cal: Calibration, **record: Any) -> None:
    """Give ``bundle`` the threshold of ``cal``; its calibration record is ``cal``'s policy, threshold, value and
    warning, and ``record`` (what the scores were: data, counts, notes)."""
    bundle.model.threshold.fill_(cal.threshold)
    bundle.policy = cal.policy
    bundle.calibration = {"policy": cal.policy, "threshold": cal.threshold, "value": cal.value, "warning": cal.warning}
    bundle.calibration |= record


def report(scores: np.ndarray, index: PatchIndex, threshold: float) -> dict:
    """Headline metrics, per defect type and per group, at ``threshold``."""
    labels = index.labels
    out = binary_metrics(scores, labels, threshold)
    out["by_type"] = recall_by_type(scores, labels, threshold, index.defect_names())
    out["by_group"] = grouped_metrics(scores, labels, threshold, index.group_names())
    return out


def format_table(rows: dict[str, dict]) -> str:
    """A plain-text table of the headline metrics of one or more methods (columns)."""
    keys = [
        ("accuracy", "accuracy"),
        ("balanced_accuracy", "balanced accuracy"),
        ("precision", "precision"),
        ("recall", "recall (defective)"),
        ("f1", "F1"),
        ("false_alarm_rate", "false-alarm rate"),
        ("auroc", "AUROC"),
        ("threshold", "threshold"),
        ("n", "patches"),
    ]
    names = list(rows)
    width = max(12, *(len(n) for n in names))
    types = sorted({t for r in rows.values() for t in r.get("by_type", {})})
    # the label column fits its longest label ("recall spurious_copper"): no label is cut
    first = max(20, *(len(label) + 1 for label in [*(label for _, label in keys), *(f"recall {t}" for t in types)]))
    lines = ["metric".ljust(first) + "".join(n.rjust(width + 2) for n in names)]
    for key, label in keys:
        cells = []
        for n in names:
            v = rows[n].get(key)
            cells.append("-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
        lines.append(label.ljust(first) + "".join(c.rjust(width + 2) for c in cells))
    for t in types:
        cells = [f"{rows[n]['by_type'][t]['recall']:.4f}" if t in rows[n].get("by_type", {}) else "-" for n in names]
        lines.append(f"recall {t}".ljust(first) + "".join(c.rjust(width + 2) for c in cells))
    return "\n".join(lines)


def run_val_items(model_path: str | Path) -> list[str] | None:
    """Validation item names of a training run folder (or of the run holding a checkpoint)."""
    from pcbsiam.ready import resolve_model

    p = resolve_model(model_path)
    cands = [p / "split.json"] if p.is_dir() else [p.parent.parent / "split.json"] if p.suffix == ".pt" else []
    for cand in cands:
        if cand.is_file():
            return list(json.loads(cand.read_text())["val"])
    return None


def known_val_items(bundle: Bundle, model_path: str | Path) -> list[str] | None:
    """The validation items of the run a model comes from: its split (a run folder or checkpoint) or what its
    calibration recorded (a bundle); ``[]`` for a run trained on every item (``data.val_fraction=0``), None
    when unknown."""
    val_items = run_val_items(model_path)
    return bundle.calibration.get("val_items") if val_items is None else val_items


def data_notes(bundle: Bundle, root: str | Path, split: str) -> tuple[bool | None, list[str]]:
    """Whether ``root``/``split`` is the data the bundle was trained on (None: not recorded), and what a
    user must know about using the bundle on it (logged as warnings too).

    A run's validation items are the right ``auto`` subset only on the run's own data: item names repeat
    across data sets (synthetic boards are named like DeepPCB's).
    """
    notes = []
    own = same_data(bundle.data, root, split)
    if own is False:
        notes.append(
            f"{root} ({split}) is not exactly the data this model was trained on ({bundle.data.get('root')}, split "
            f"{bundle.data.get('split')}, fingerprint {bundle.data.get('fingerprint')}): the run's validation items "
            "do not apply here, and some items may be ones it trained on"
        )
    if bundle.data.get("synthetic") and not (Path(root) / SYNTHETIC_MARKER).is_file():
        notes.append(
            "this model was trained on synthetic boards (pcbsiam data synth); on real boards expect many false "
            "alarms: train on real boards for real figures"
        )
    for note in notes:
        log.warning("%s", note)
    return own, notes


def resolve_subset(subset: str, val_items: list[str] | None, default: str) -> str:
    """``auto`` becomes ``default`` (train or val) when a run's split is known, else ``all``."""
    if subset != "auto":
        return subset
    return default if val_items is not None else "all"


def bundle_scores(
    bundle: Bundle,
    root: str | Path,
    split: str,
    subset: str,
    val_items: list[str] | None,
    max_patches: int | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
) -> tuple[PatchSet, np.ndarray]:
    """The patches of one subset, cut and registered as the bundle's config says, and their scores."""
    data = load_subset(root, split, subset, val_items, bundle.spec, cache_dir=cache_dir, max_patches=max_patches)
    return data, model_scorer(bundle, device)(data.store, data.index)


def calibrate_model(
    model: str | Path,
    root: str | Path,
    split: str = "trainval.txt",
    policy: str = "accuracy",
    subset: str = "auto",
    max_patches: int | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    boards: dict[str, np.ndarray] | None = None,
    inference: dict[str, Any] | None = None,
) -> Bundle:
    """Choose the threshold of a run (or bundle) on training patches and return the calibrated bundle.

    By default the items are the run's training items (the paper's rule: sweep the training
    distances). Standard boards of a paper-layout data set, and ``boards``, are registered by name.
    ``inference`` sets how the network is applied (e.g. ``{"model.gate": 0}``, see
    :func:`~pcbsiam.deploy.bundle.load_bundle`): the threshold is chosen, and the bundle saved, with it.
    """
    from pcbsiam.data.images import load_gray
    from pcbsiam.data.paper import is_paper_layout, read_paper_layout
    from pcbsiam.deploy.bundle import load_bundle

    bundle = load_bundle(model, device, inference, recalibrating=True)
    val_items = known_val_items(bundle, model)
    own, notes = data_notes(bundle, root, split)
    if own is False and subset == "auto":
        val_items = None  # the run's item names mean other boards here: calibrate on every item
    data, scores = bundle_scores(
        bundle, root, split, resolve_subset(subset, val_items, "train"), val_items, max_patches, cache_dir, device
    )
    subset = data.subset
    set_threshold(
        bundle,
        calibrate_scores(scores, data.index.labels, policy),
        source="training patches" if subset == "train" else f"{subset} patches",
        data=str(root),
        split=str(split),
        subset=subset,
        patches=len(data.index),
        defective=int(data.index.labels.sum()),
        val_items=val_items,
        notes=notes,
    )
    if is_paper_layout(root):
        for pair in read_paper_layout(root).pairs:
            bundle.boards.setdefault(pair.group, load_gray(pair.template))
    bundle.boards.update(boards or {})
    return bundle


def evaluate_models(
    models: list[str | Path],
    root: str | Path,
    split: str = "trainval.txt",
    subset: str = "auto",
    max_patches: int | None = None,
    baseline: bool = False,
    cache_dir: str | None = None,
    device: str = "cpu",
    engines: list[str] | None = None,
    inference: dict[str, Any] | None = None,
) -> tuple[dict, dict[str, tuple[np.ndarray, np.ndarray, float]]]:
    """Evaluate calibrated bundles (and optionally the classical method) on the same patches.

    The classical method is calibrated on the items not evaluated with the calibration policy of the
    (last) bundle, so that both sit at the same kind of operating point (``accuracy``, ``recall:0.995``).

    With ``engines`` (``torch``, ``onnx-fp32``, ``onnx-int8``) each bundle is also scored through
    those inference engines, so a user sees what ONNX Runtime and int8 quantisation cost; the int8
    graph is calibrated on 256 training patches.

    Returns:
        ({"models": name -> report, "mean_std": ... when several models}, name -> (scores, labels, threshold)).
    """
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.evaluation.metrics import mean_std

    reports: dict[str, dict] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]] = {}
    data = None
    for path in models:
        bundle = load_bundle(path, device, inference)
        if np.isnan(bundle.threshold):
            raise PcbsiamError(f"{path} has no threshold: run `pcbsiam calibrate --model {path}` first")
        val_items = known_val_items(bundle, path)
        own, notes = data_notes(bundle, root, split)
        if own is False and subset == "auto":
            val_items = None  # the run's item names mean other boards here: evaluate every item
            notes.append("every item of the data is evaluated (--subset auto)")
        elif val_items == [] and subset == "auto":  # trained with data.val_fraction=0: no item was kept out
            val_items = None
            notes.append(
                "the model trained without validation items (data.val_fraction=0): every item is evaluated, and "
                "those it trained on overstate what it does on boards it has not seen"
            )
            log.warning("%s", notes[-1])
        data, scores = bundle_scores(
            bundle, root, split, resolve_subset(subset, val_items, "val"), val_items, max_patches, cache_dir, device
        )
        sub = data.subset
        name = Path(path).name if Path(path).is_dir() else Path(path).stem
        name = name if name not in reports else f"{name}_{len(reports)}"
        reports[name] = report(scores, data.index, bundle.threshold) | {"subset": sub, "model": str(path)}
        if notes:
            reports[name]["notes"] = notes
        curves[name] = (scores, data.index.labels, bundle.threshold)
        for engine_name in [e for e in engines or [] if e != "torch"]:
            reports[f"{name}[{engine_name}]"] = _engine_report(
                bundle, engine_name, data, root, split, val_items, cache_dir
            ) | {"subset": sub, "model": str(path)}
    if baseline and data is not None:
        # calibrated on the items not evaluated (all items when everything is evaluated, said in the report)
        evaluated = [p.name for p in data.store.pairs]
        calib_subset = "train" if data.subset == "val" else "all"
        train = load_subset(
            root, split, calib_subset, evaluated, PatchSpec(patch=int(data.index.rows["h"][0])), cache_dir
        )
        scorer = classical_scorer()
        policy = bundle.policy  # the same operating policy as the (last) model's
        cal = calibrate_scores(scorer(train.store, train.index), train.index.labels, policy)
        s = scorer(data.store, data.index)
        reports["classical"] = report(s, data.index, cal.threshold) | {
            "subset": data.subset,
            "calibrated_on": calib_subset,
            "policy": policy,
        }
        if calib_subset == "all":
            reports["classical"]["notes"] = [
                "the classical method was calibrated on the very patches it is scored on (no other items were "
                "left): its figures are optimistic"
            ]
        curves["classical"] = (s, data.index.labels, cal.threshold)
    result: dict = {"models": reports}
    learned = [r for n, r in reports.items() if n != "classical" and "engine" not in r]
    if len(learned) > 1:
        keys = ("accuracy", "balanced_accuracy", "recall", "false_alarm_rate", "auroc")
        result["mean_std"] = mean_std([{k: r[k] for k in keys if r.get(k) is not None} for r in learned])
    return result, curves


def _engine_report(
    bundle: Bundle,
    engine_name: str,
    data: PatchSet,
    root: str | Path,
    split: str,
    val_items: list[str] | None,
    cache_dir: str | None,
) -> dict:
    import tempfile

    from pcbsiam.deploy.backends import make_engine

    tested, reference = (
        training_patches(bundle, root, split, val_items, 256, cache_dir) if engine_name == "onnx-int8" else (None, None)
    )
    with tempfile.TemporaryDirectory() as work:
        engine = make_engine(engine_name, bundle, work, calibration_patches=tested, calibration_references=reference)
        gate = TileGate.of(bundle.model.cfg, bundle.spec.patch, bundle.spec.context)
        scores = engine_scorer(engine, gate=gate, null_score=bundle.model.null_score)(data.store, data.index)
    return report(scores, data.index, bundle.threshold) | {"engine": engine_name}
