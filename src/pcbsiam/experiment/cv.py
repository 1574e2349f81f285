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

Repeating the command skips finished folds and resumes an interrupted one, so the folds can span
several sessions; ``--only GROUP`` runs some folds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pcbsiam.config import Config, apply_overrides, dump_config, from_dict, inference_settings, without_inference
from pcbsiam.data.defects import defect_name
from pcbsiam.data.sources import read_boards
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.evaluation.evaluate import classical_scorer, load_subset, model_scorer
from pcbsiam.evaluation.metrics import binary_metrics, mean_std, recall_by_type
from pcbsiam.io import atomic_path, write_json, write_text

log = logging.getLogger(__name__)

POLICIES = ("accuracy", "recall:0.995")
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
        if inference_settings(Config()) | record.get("inference", {}) == inference:
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


def _figures(scores: np.ndarray, labels: np.ndarray, defect: np.ndarray, threshold: float) -> dict[str, Any]:
    m = binary_metrics(scores, labels, threshold)
    names = np.array([defect_name(int(d)) for d in defect], dtype=object)
    m["by_type"] = {k: v["recall"] for k, v in recall_by_type(scores, labels, threshold, names).items()}
    return m


def cv_report(out: str | Path) -> dict[str, Any]:
    """Per-fold and pooled figures of the finished folds of ``out`` (also written to results.json, cv.md)."""
    out = Path(out)
    if not (out / "cv.json").is_file():
        raise ConfigError(f"{out} holds no cross-validation (no cv.json): run `pcbsiam cv --config ... --out {out}`")
    request = json.loads((out / "cv.json").read_text())
    policies = request["policies"]
    folds: dict[str, Any] = {}
    pooled: dict[str, dict[str, list[np.ndarray]]] = {m: {p: [] for p in policies} for m in ("model", "classical")}
    concat: dict[str, list[np.ndarray]] = {"labels": [], "defect": [], "model": [], "classical": []}
    for group in request["groups"]:
        run = fold_dir(out, group)
        if not (run / "fold.json").is_file():
            continue
        rec = json.loads((run / "fold.json").read_text())
        data = np.load(run / "scores.npz")
        fold = {"patches": rec["patches"], "defective": rec["defective"], "train_seconds": rec["train_seconds"]}
        for method in ("model", "classical"):
            concat[method].append(data[method])
            for p in policies:
                thr = rec["thresholds"][method][p]
                fold[f"{method}@{p}"] = _figures(data[method], data["labels"], data["defect"], thr)
                pooled[method][p].append((data[method] > thr).astype(np.int64))
        concat["labels"].append(data["labels"])
        concat["defect"].append(data["defect"])
        folds[group] = fold
    result: dict[str, Any] = {"request": request, "folds": folds, "done": len(folds), "of": len(request["groups"])}
    if folds:
        labels, defect = np.concatenate(concat["labels"]), np.concatenate(concat["defect"])
        result["pooled"] = {}
        for method in ("model", "classical"):
            for p in policies:
                verdicts = np.concatenate(pooled[method][p]).astype(np.float64)
                # verdicts as scores at threshold 0.5: the pooled figures of each fold's own threshold
                fig = _figures(verdicts, labels, defect, 0.5)
                fig.pop("auroc", None)
                fig["auroc_mean_std"] = mean_std([{"auroc": f[f"{method}@{p}"]["auroc"]} for f in folds.values()])
                fig["mean_std"] = mean_std([{k: f[f"{method}@{p}"][k] for k in HEADLINE} for f in folds.values()])
                result["pooled"][f"{method}@{p}"] = fig
        result["train_seconds_mean"] = float(np.mean([f["train_seconds"] for f in folds.values()]))
    write_json(out / "results.json", result)
    write_text(out / "cv.md", render_cv(result))
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


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
    types = sorted({t for fig in result["pooled"].values() for t in fig["by_type"]})
    lines += ["", "Recall per defect type (pooled, %):", ""]
    lines += ["| method @ policy | " + " | ".join(types) + " |", "| --- |" + " ---: |" * len(types)]
    for key, fig in result["pooled"].items():
        lines.append(f"| {key} | " + " | ".join(_pct(fig["by_type"].get(t)) for t in types) + " |")
    lines += ["", "Per fold (model @ accuracy policy; classical @ accuracy policy):", ""]
    lines += [
        "| held-out group | patches | defective | model acc. | model AUROC | classical acc. | training s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = result["request"]["policies"][0]
    for g, f in result["folds"].items():
        m, c = f[f"model@{first}"], f[f"classical@{first}"]
        lines.append(
            f"| {g} | {f['patches']} | {f['defective']} | {_pct(m['accuracy'])} | {m['auroc']:.4f} | "
            f"{_pct(c['accuracy'])} | {f['train_seconds']:.0f} |"
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
        cv_report(out)
    return cv_report(out)
