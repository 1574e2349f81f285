"""Leave-one-group-out cross-validation: the accuracy a user gets on board designs nobody tuned on.

Each fold trains a config on every PCB group but one (``data.holdout_groups``), calibrates its
threshold on its training patches at each policy (the paper's best accuracy, and a recall target),
and scores the held-out group's patches, beside the classical comparison calibrated the same way on
the same training boards. Folder layout::

    OUT/cv.json                  what was asked: config, groups, policies (checked on every repeat)
    OUT/fold-<group>/            the training run (resumed when interrupted)
    OUT/fold-<group>/scores.npz  held-out scores and labels of the model and the classical method
    OUT/fold-<group>/fold.json   thresholds, per-fold figures, training and scoring time
    OUT/results.json, OUT/cv.md  per-fold and pooled figures (pooled: verdicts of all folds together)

The report pools two calibrations: each fold's threshold chosen on its own training patches, and one
chosen on the other folds' held-out scores ("out-of-group"; a network is surer of boards it trained on,
so its training scores put the threshold too high for unseen designs). :func:`calibrate_from_cv` gives a
model trained with the same config on every group the threshold chosen on all folds' held-out scores.

Repeating the command skips finished folds and resumes an interrupted one, so the folds can span
several sessions; ``--only GROUP`` runs some folds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pcbsiam.config import Config, apply_overrides, dump_config, from_dict, inference_settings, without_inference
from pcbsiam.data.defects import defect_name
from pcbsiam.data.sources import read_boards
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold, parse_policy
from pcbsiam.evaluation.evaluate import calibrate_scores, classical_scorer, load_subset, model_scorer, set_threshold
from pcbsiam.evaluation.metrics import binary_metrics, mean_std, recall_by_type, roc_auc
from pcbsiam.io import atomic_path, write_json, write_text

if TYPE_CHECKING:
    from pcbsiam.deploy.bundle import Bundle

log = logging.getLogger(__name__)

POLICIES = ("accuracy", "recall:0.995")
METHODS = ("model", "classical")
#: Suffix of the pooled rows whose thresholds were chosen on the other folds' held-out scores.
OUT_OF_GROUP = "out-of-group"
HEADLINE = ("accuracy", "balanced_accuracy", "auroc", "recall", "false_alarm_rate")


def fold_dir(out: Path, group: str) -> Path:
    """Folder of the fold that holds ``group`` out."""
    return out / f"fold-{group}"


def _check_request(out: Path, request: dict[str, Any]) -> None:
    """Refuse to mix folds of another config, data or policy set in one folder. The configs are compared
    with today's defaults filled in and without the settings of how a network is applied
    (:data:`pcbsiam.config.INFERENCE_KEYS`): folds scored with other such settings are scored again."""
    path = out / "cv.json"
    if path.is_file():
        old = json.loads(path.read_text())
        old = {**old, "config": without_inference(from_dict(old["config"]))}
        new = {**request, "config": without_inference(from_dict(request["config"]))}
        changed = sorted(k for k in ("config", "groups", "policies") if old.get(k) != new[k])
        if changed:
            raise ConfigError(f"{out} holds a cross-validation of another {', '.join(changed)}; choose another --out")
    write_json(path, request)


def _train_fold(cfg: Config, run: Path, fit: Callable[..., dict]) -> float:
    """Train (or resume, or skip) one fold; returns its training seconds."""
    summary = run / "summary.json"
    if not summary.is_file():
        fit(cfg, run, resume=(run / "checkpoints" / "last.pt").is_file())
    return float(json.loads(summary.read_text())["seconds"])


def _thresholds(scores: np.ndarray, labels: np.ndarray, policies: Sequence[str]) -> dict[str, float]:
    return {p: float(choose_threshold(scores, labels, p).threshold) for p in policies}


def run_fold(
    cfg: Config,
    group: str,
    out: Path,
    policies: Sequence[str] = POLICIES,
    calib_patches: int | None = 4000,
    device: str = "cpu",
    fit: Callable[..., dict] | None = None,
) -> dict[str, Any]:
    """Train, calibrate and score the fold that holds ``group`` out (skipped when already done)."""
    from pcbsiam.deploy.bundle import load_bundle

    if fit is None:
        from pcbsiam.train.fit import fit
    run = fold_dir(out, group)
    done = run / "fold.json"
    inference = inference_settings(cfg)
    if done.is_file():
        record = json.loads(done.read_text())
        # settings a record predates took their defaults
        if _scored_with(record) == inference:
            return record
        log.info("%s: scored with %s before, scoring again with %s", group, record.get("inference"), inference)
    cfg = from_dict(apply_overrides(cfg.to_dict(), [f"data.holdout_groups=[{group}]"]))
    train_seconds = _train_fold(cfg, run, fit)
    t0 = time.perf_counter()
    bundle = load_bundle(run, device, inference)  # how the trained network is applied is the request's
    val_items = json.loads((run / "split.json").read_text())["val"]
    root, split = cfg.data.root, cfg.data.split
    spec = bundle.spec
    train = load_subset(root, split, "train", val_items, spec, cfg.data.cache_dir, calib_patches, seed=1)
    held = load_subset(root, split, "val", val_items, spec, cfg.data.cache_dir)
    score = model_scorer(bundle, device)
    calib_model = score(train.store, train.index)
    model_thr = _thresholds(calib_model, train.index.labels, policies)
    model_scores = score(held.store, held.index)
    classical = classical_scorer()  # registers each whole board itself: the same patches, store shifts unused
    calib_classical = classical(train.store, train.index)
    classical_thr = _thresholds(calib_classical, train.index.labels, policies)
    classical_scores = classical(held.store, held.index)
    with atomic_path(run / "scores.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(  # the calibration scores too: other policies can be compared later without scoring again
            fh,
            model=model_scores,
            classical=classical_scores,
            labels=held.index.labels,
            defect=held.index.rows["defect"].astype(np.int64),
            calib_model=calib_model,
            calib_classical=calib_classical,
            calib_labels=train.index.labels,
        )
    record = {
        "group": group,
        "patches": len(held.index),
        "defective": int(held.index.labels.sum()),
        "score_name": bundle.model.score_name,
        "thresholds": {"model": model_thr, "classical": classical_thr},
        "inference": inference,
        "train_seconds": round(train_seconds, 1),
        "score_seconds": round(time.perf_counter() - t0, 1),
    }
    write_json(done, record)
    return record


def figures_at(scores: np.ndarray, labels: np.ndarray, defect: np.ndarray, threshold: float) -> dict[str, Any]:
    """Headline metrics of ``scores`` at ``threshold`` (defective iff above) with recall per defect type."""
    m = binary_metrics(scores, labels, threshold)
    names = np.array([defect_name(int(d)) for d in defect], dtype=object)
    m["by_type"] = {k: v["recall"] for k, v in recall_by_type(scores, labels, threshold, names).items()}
    return m


@dataclass
class HeldOut:
    """The held-out scores of a cross-validation's finished folds, one array per fold.

    Attributes:
        request: what the cross-validation was asked (cv.json: config, groups, policies, config_name).
        records: the finished folds' fold.json records, by held-out group.
        scores: method (``model``, ``classical``) -> per fold (n_i,) held-out scores.
        labels: per fold (n_i,) labels, 1 = defective.
        defect: per fold (n_i,) defect type codes of the patches (0: none).
    """

    request: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    scores: dict[str, list[np.ndarray]] = field(default_factory=lambda: {m: [] for m in METHODS})
    labels: list[np.ndarray] = field(default_factory=list)
    defect: list[np.ndarray] = field(default_factory=list)


def held_out(out: str | Path) -> HeldOut:
    """Read the held-out scores of the finished folds of the cross-validation in ``out``.

    Raises:
        ConfigError: ``out`` holds no cross-validation.
    """
    out = Path(out)
    if not (out / "cv.json").is_file():
        raise ConfigError(f"{out} holds no cross-validation (no cv.json): run `pcbsiam cv --config ... --out {out}`")
    result = HeldOut(json.loads((out / "cv.json").read_text()))
    for group in result.request["groups"]:
        run = fold_dir(out, group)
        if not (run / "fold.json").is_file():
            continue
        result.records[group] = json.loads((run / "fold.json").read_text())
        with np.load(run / "scores.npz") as data:
            for method in METHODS:
                result.scores[method].append(data[method])
            result.labels.append(data["labels"])
            result.defect.append(data["defect"])
    return result


def out_of_group_thresholds(scores: Sequence[np.ndarray], labels: Sequence[np.ndarray], policy: str) -> list[float]:
    """For each fold, the threshold ``policy`` chooses on the held-out scores of all the other folds.

    No fold's threshold saw its own group's labels, so the verdicts at these thresholds estimate what a
    threshold calibrated on held-out scores (:func:`calibrate_from_cv`) gives on a design nobody tuned on.

    Args:
        scores: per fold (n_i,) held-out scores, at least two folds.
        labels: per fold (n_i,) labels.
        policy: a calibration policy (``accuracy``, ``recall:0.995``, ...).
    """
    if len(scores) < 2:
        raise ConfigError("out-of-group calibration needs at least 2 finished folds")
    out = []
    for k in range(len(scores)):
        others = [i for i in range(len(scores)) if i != k]
        pooled = np.concatenate([scores[i] for i in others])
        out.append(float(choose_threshold(pooled, np.concatenate([labels[i] for i in others]), policy).threshold))
    return out


def _pooled_row(folds: dict[str, Any], key: str, verdicts: list[np.ndarray], data: HeldOut) -> dict[str, Any]:
    """Figures of all folds' verdicts together (each at its own threshold), with the folds' mean ± std of
    ``folds[g][key]``."""
    labels, defect = np.concatenate(data.labels), np.concatenate(data.defect)
    fig = figures_at(np.concatenate(verdicts).astype(np.float64), labels, defect, 0.5)  # verdicts as 0/1 scores
    for meaningless in ("auroc", "threshold"):  # of the 0/1 verdicts, not of the scores
        fig.pop(meaningless, None)
    fig["auroc_mean_std"] = mean_std([{"auroc": f[key]["auroc"]} for f in folds.values()])
    fig["mean_std"] = mean_std([{k: f[key][k] for k in HEADLINE} for f in folds.values()])
    return fig


def _out_of_group_row(folds: dict[str, Any], method: str, policy: str, data: HeldOut) -> tuple[str, dict[str, Any]]:
    """The pooled row of ``method`` at ``policy`` calibrated out of group; adds each fold's figures to ``folds``."""
    key = f"{method}@{policy} ({OUT_OF_GROUP})"
    scores = data.scores[method]
    thresholds = out_of_group_thresholds(scores, data.labels, policy)
    for k, (fold, thr) in enumerate(zip(folds.values(), thresholds, strict=True)):
        fold[key] = figures_at(scores[k], data.labels[k], data.defect[k], thr)
    verdicts = [(s > t).astype(np.int64) for s, t in zip(scores, thresholds, strict=True)]
    fig = _pooled_row(folds, key, verdicts, data)
    fig["fold_thresholds"] = dict(zip(folds, thresholds, strict=True))
    return key, fig


def cv_report(out: str | Path, extra_policies: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`summarise` the finished folds of ``out``, written to results.json and cv.md too."""
    result = summarise(held_out(out), extra_policies)
    write_json(Path(out) / "results.json", result)
    write_text(Path(out) / "cv.md", render_cv(result))
    return result


def summarise(data: HeldOut, extra_policies: Sequence[str] = ()) -> dict[str, Any]:
    """Per-fold and pooled figures of a cross-validation's finished folds.

    Two calibrations are pooled: each fold's threshold chosen on its own training patches (``method@policy``)
    and, with two folds or more, chosen on the other folds' held-out scores (``method@policy (out-of-group)``,
    also at ``extra_policies``). ``out_of_group`` holds the thresholds chosen on all folds' held-out scores:
    what :func:`calibrate_from_cv` gives a model trained with the same config on every group.
    """
    request = data.request
    policies = request["policies"]
    folds: dict[str, Any] = {}
    own: dict[str, list[np.ndarray]] = {f"{m}@{p}": [] for m in METHODS for p in policies}
    for k, (group, rec) in enumerate(data.records.items()):
        fold = {"patches": rec["patches"], "defective": rec["defective"], "train_seconds": rec["train_seconds"]}
        for method in METHODS:
            for p in policies:
                thr = rec["thresholds"][method][p]
                fold[f"{method}@{p}"] = figures_at(data.scores[method][k], data.labels[k], data.defect[k], thr)
                own[f"{method}@{p}"].append((data.scores[method][k] > thr).astype(np.int64))
        folds[group] = fold
    result: dict[str, Any] = {"request": request, "folds": folds, "done": len(folds), "of": len(request["groups"])}
    if folds:
        labels = np.concatenate(data.labels)
        result["pooled"] = {key: _pooled_row(folds, key, verdicts, data) for key, verdicts in own.items()}
        result["auroc_pooled"] = {m: roc_auc(np.concatenate(data.scores[m]), labels) for m in METHODS}
        result["train_seconds_mean"] = float(np.mean([f["train_seconds"] for f in folds.values()]))
    if len(folds) >= 2:
        every = list(dict.fromkeys([*policies, *extra_policies]))
        result["out_of_group"] = {m: {} for m in METHODS}
        for method in METHODS:
            for p in every:
                key, fig = _out_of_group_row(folds, method, p, data)
                result["pooled"][key] = fig
                cal = choose_threshold(np.concatenate(data.scores[method]), labels, p)
                result["out_of_group"][method][p] = {"threshold": float(cal.threshold), "value": float(cal.value)}
        order = {m: i for i, m in enumerate(METHODS)}  # model rows first; a stable sort keeps own before out-of-group
        result["pooled"] = dict(sorted(result["pooled"].items(), key=lambda kv: order[kv[0].split("@")[0]]))
    return result


#: Settings that may differ between a cross-validation's folds and a model calibrated from them: where the
#: data came from and how it was split (the classifier head's width follows its groups), and bookkeeping that
#: does not change what a network learns.
_FREE_KEYS = {
    "model.num_classes",
    "data.root",
    "data.split",
    "data.val_fraction",
    "data.split_seed",
    "data.holdout_groups",
    "data.cache_dir",
    "data.workers",
    "train.seed",
    "train.device",
    "train.val_max_patches",
    "train.checkpoint_every",
    "train.log_every",
}


#: Data settings that change what the network scores (the patches' geometry and registration): as decisive as
#: the network's own settings.
_PATCH_KEYS = {"data.patch", "data.stride", "data.register", "data.context", "data.local_shift"}


def _scored_with(record: dict[str, Any]) -> dict[str, Any]:
    """The inference settings a fold record was scored with (settings it predates took their defaults)."""
    return inference_settings(Config()) | record.get("inference", {})


def _flat(d: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{k}": v for section, values in d.items() for k, v in values.items()}


def calibrate_from_cv(
    model: str | Path,
    cv: str | Path,
    policy: str = "accuracy",
    device: str = "cpu",
    inference: dict[str, Any] | None = None,
) -> Bundle:
    """Give a model the threshold ``policy`` chooses on a cross-validation's held-out scores.

    The model should be trained with the cross-validation's config (on every group, or other boards of the
    same kind); its training scores would put the threshold where boards it has seen are separated, the
    held-out scores where designs nobody tuned on are. ``cv_report``'s out-of-group rows estimate what the
    threshold gives on a new design.

    Args:
        model: training run folder, checkpoint or bundle.
        cv: the cross-validation folder (``pcbsiam cv --out``), at least two folds finished.
        policy: the calibration policy.
        device: where the network goes.
        inference: how the network is applied (see :func:`~pcbsiam.deploy.bundle.load_bundle`); it must be
            how the folds were scored.

    Returns:
        The calibrated bundle (its ``calibration`` records the cross-validation, the folds, the notes).

    Raises:
        ConfigError: fewer than two finished folds, a network of another kind than the folds', or the
            network applied otherwise than the folds were scored.
    """
    from pcbsiam.deploy.bundle import load_bundle
    from pcbsiam.evaluation.evaluate import known_val_items

    parse_policy(policy)
    data = held_out(cv)
    if len(data.records) < 2:
        raise ConfigError(f"{cv}: {len(data.records)} fold(s) finished; calibrating from held-out scores needs 2")
    bundle = load_bundle(model, device, inference, recalibrating=True)
    folds_cfg = _flat(without_inference(from_dict(data.request["config"])))
    mine = _flat(without_inference(bundle.cfg))
    keys = folds_cfg.keys() | mine.keys()
    differ = sorted(k for k in keys if k not in _FREE_KEYS and folds_cfg.get(k) != mine.get(k))

    def told(names: list[str]) -> str:
        return ", ".join(f"{k}: {mine.get(k)} here, {folds_cfg.get(k)} in the folds" for k in names)

    # the starting weights (a path) do not make another network; the patches' geometry does
    network = [k for k in differ if (k.startswith("model.") and k != "model.weights") or k in _PATCH_KEYS]
    if network:
        raise ConfigError(
            f"{model} is another network than the folds of {cv} ({told(network)}): its scores are on another "
            "scale; calibrate it on its data, or cross-validate its config"
        )
    applied = inference_settings(bundle.cfg)
    for group, rec in data.records.items():
        scored = _scored_with(rec)
        if scored != applied:
            raise ConfigError(
                f"{cv}: fold {group} was scored with {scored}, the model is applied with {applied}: pass the same "
                f"settings (e.g. --gate, --views) or score the folds again (pcbsiam cv --set ...)"
            )
    notes = []
    if differ:
        notes.append(
            f"trained otherwise than the folds of {cv} ({told(differ)}): the held-out scores may sit on another scale"
        )
    if len(data.records) < len(data.request["groups"]):
        notes.append(f"{len(data.records)} of {len(data.request['groups'])} folds of {cv} finished")
    for note in notes:
        log.warning("%s", note)
    scores, labels = np.concatenate(data.scores["model"]), np.concatenate(data.labels)
    folds = {g: {} for g in data.records}
    estimate = _out_of_group_row(folds, "model", policy, data)[1]
    set_threshold(
        bundle,
        calibrate_scores(scores, labels, policy),
        source="cross-validation",
        cv=str(Path(cv).resolve()),
        folds=sorted(data.records),
        patches=int(labels.size),
        defective=int(labels.sum()),
        out_of_group={k: estimate[k] for k in ("accuracy", "recall", "false_alarm_rate", "by_type")},
        val_items=known_val_items(bundle, model),
        notes=notes,
    )
    return bundle


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def _auc(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def render_cv(result: dict[str, Any]) -> str:
    """Markdown tables of a :func:`cv_report` result."""
    lines = [
        f"Leave-one-group-out cross-validation: {result['done']} of {result['of']} folds done "
        f"(config {result['request']['config_name']}).",
        "",
    ]
    if not result["folds"]:
        return "\n".join(lines) + "\n"
    lines += [
        "| method @ policy | accuracy | balanced acc. | recall | false alarms | AUROC (fold mean ± std) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, fig in result["pooled"].items():
        auc = fig["auroc_mean_std"].get("auroc", {})
        auc_text = f"{auc.get('mean', float('nan')):.4f} ± {auc.get('std', float('nan')):.4f}" if auc else "-"
        lines.append(
            f"| {key} | {_pct(fig['accuracy'])} | {_pct(fig['balanced_accuracy'])} | {_pct(fig['recall'])} | "
            f"{_pct(fig['false_alarm_rate'])} | {auc_text} |"
        )
    if result.get("auroc_pooled"):
        auc = result["auroc_pooled"]
        lines += [
            "",
            f"AUROC of all folds' held-out scores pooled: model {auc['model']:.4f}, classical {auc['classical']:.4f}.",
        ]
    if result.get("out_of_group"):
        lines += [
            "",
            f"Rows marked ({OUT_OF_GROUP}): each fold's threshold chosen on the other folds' held-out scores, never on "
            "its own group. Thresholds on all folds' held-out scores, for a model trained with this config on every "
            "group (`pcbsiam calibrate --model RUN --from-cv DIR --policy P`): "
            + ", ".join(f"{p} {v['threshold']:.4g}" for p, v in result["out_of_group"]["model"].items())
            + ".",
        ]
    types = sorted({t for fig in result["pooled"].values() for t in fig["by_type"]})
    lines += ["", "Recall per defect type (pooled, %):", ""]
    lines += ["| method @ policy | " + " | ".join(types) + " |", "| --- |" + " ---: |" * len(types)]
    for key, fig in result["pooled"].items():
        lines.append(f"| {key} | " + " | ".join(_pct(fig["by_type"].get(t)) for t in types) + " |")
    first = result["request"]["policies"][0]
    oog = f"model@{first} ({OUT_OF_GROUP})"
    lines += ["", f"Per fold (model and classical @ {first} policy; out-of-group: model @ {oog}):", ""]
    lines += [
        "| held-out group | patches | defective | model acc. | out-of-group acc. | model AUROC | classical acc. | "
        "training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for g, f in result["folds"].items():
        m, c = f[f"model@{first}"], f[f"classical@{first}"]
        lines.append(
            f"| {g} | {f['patches']} | {f['defective']} | {_pct(m['accuracy'])} | "
            f"{_pct(f[oog]['accuracy']) if oog in f else '-'} | {_auc(m['auroc'])} | {_pct(c['accuracy'])} | "
            f"{f['train_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def run_cv(
    cfg: Config,
    out: str | Path,
    config_name: str,
    only: Sequence[str] | None = None,
    policies: Sequence[str] = POLICIES,
    calib_patches: int | None = 4000,
    device: str = "cpu",
    fit: Callable[..., dict] | None = None,
    extra_policies: Sequence[str] = (),
) -> dict[str, Any]:
    """Run (or continue) the leave-one-group-out cross-validation of ``cfg`` into ``out``.

    Args:
        cfg: the training config (``data.root`` set; its ``data.holdout_groups`` must be empty).
        out: output folder (see the module docstring).
        config_name: how the config was named (preset or file), for the report.
        only: hold out these groups only (default: every group of the data).
        policies: calibration policies each fold is scored at.
        calib_patches: training patches each threshold is calibrated on (None: all).
        device: where calibration and scoring run (training follows ``train.device``).
        fit: the training function (tests pass a stand-in).
        extra_policies: more policies of the out-of-group calibration in the report (see :func:`summarise`).

    Returns:
        The :func:`cv_report` result.
    """
    if not cfg.data.root:
        raise ConfigError("no data root: set data.root in the config or pass --data ROOT")
    if cfg.data.holdout_groups:
        raise ConfigError("cross-validation chooses the held-out group of each fold: drop data.holdout_groups")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    groups = read_boards(cfg.data.root, cfg.data.split).groups
    if len(groups) < 2:
        raise ConfigError(f"cross-validation needs at least 2 groups in {cfg.data.root}, found {groups}")
    unknown = sorted(set(only or []) - set(groups))
    if unknown:
        raise ConfigError(f"unknown group(s) {unknown}; the data has {groups}")
    out.mkdir(parents=True, exist_ok=True)
    request = {"config": cfg.to_dict(), "groups": groups, "policies": list(policies), "config_name": config_name}
    _check_request(out, request)
    write_text(out / "config.yaml", dump_config(cfg))
    for k, group in enumerate(g for g in groups if not only or g in only):
        log.info("fold %d/%d: %s held out", k + 1, len(only or groups), group)
        run_fold(cfg, group, out, policies, calib_patches, device, fit)
        cv_report(out, extra_policies)
    return cv_report(out, extra_policies)
