"""A training run: data, split, triplets, loops, checkpoints and the run folder's files.

Run folder::

    config.yaml          the full configuration
    split.json           names of training and validation items
    metrics.jsonl        one record per logged step and per epoch
    checkpoints/last.pt  resumable state (model, optimizer, scheduler, position)
    checkpoints/best.pt  the epoch of best validation AUROC, threshold inside (the last epoch without validation)
    learning_curve.png   loss and validation accuracy / AUROC
    summary.json         final figures

Nothing is written before the data is split, the network built and (on resume) the checkpoint loaded
and checked, so a refused run leaves its folder as it was.

Resuming (``resume=True``) continues ``checkpoints/last.pt`` and refuses, naming the settings, a
configuration that differs from the checkpoint's in anything that alters the run. Only these may
change (:data:`RESUME_MAY_CHANGE`):

* ``train.device``, ``train.amp``, ``train.cpu_amp``, ``data.workers``, ``data.cache_dir``: where and how fast
  it runs;
* ``train.log_every``, ``train.checkpoint_every``: how often it logs and checkpoints;
* ``data.root``: where the data lies now (the items must give the run's ``split.json`` exactly);
* ``train.epochs``, with ``train.scheduler=none`` only and not below the epochs already trained:
  a cosine schedule spans the run's planned steps, so more epochs would bend the rate curve of a
  half-finished run into one no uninterrupted run follows; such a change is refused.

A folder without ``checkpoints/last.pt`` cannot be resumed (a sentence says so). Without ``resume``
a folder holding a checkpoint is refused; one holding only the files of a run killed before its first
checkpoint (``config.yaml``, ``split.json``, ``metrics.jsonl``, ``best.pt``) starts afresh, and those
files are replaced.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from pcbsiam.checkpoint import load_checkpoint, save_checkpoint
from pcbsiam.config import Config, dump_config, from_dict
from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.protocol import PatchIndex, subsample
from pcbsiam.data.sampler import split_by_group, split_by_image
from pcbsiam.data.sources import describe_data, no_readable_items, patches_of, read_boards
from pcbsiam.data.store import BoardStore, load_store, register_store
from pcbsiam.devices import unwrap, warn_cpu_amp
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.evaluation.metrics import binary_metrics
from pcbsiam.evaluation.scoring import ReferenceCache, score_index
from pcbsiam.io import append_jsonl, read_jsonl, write_json, write_text
from pcbsiam.models import build_model
from pcbsiam.progress import quiet
from pcbsiam.train.distributed import DistInfo, barrier, cleanup, init_distributed
from pcbsiam.train.loops import (
    StepStats,
    cosine_schedule,
    make_optimizer,
    train_one_epoch,
)
from pcbsiam.train.objectives import objective_for

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """Training and validation boards and patches of one run."""

    train_store: BoardStore
    train_index: PatchIndex
    val_store: BoardStore
    val_index: PatchIndex


def prepare_data(cfg: Config) -> SplitData:
    """Read, decode, split by whole image (or by group) and cut patches.

    The training index numbers only the training groups (the classifier's classes); the
    validation index numbers all groups.
    """
    if not cfg.data.root:
        raise ConfigError("no data root: set data.root in the config or pass --data ROOT")
    boards = read_boards(cfg.data.root, cfg.data.split)
    store = load_store(boards, cache_dir=cfg.data.cache_dir)
    for err in store.skipped:
        log.warning("skipped %s", err)
    if len(store) == 0:
        raise no_readable_items(cfg.data.root, f"the split {cfg.data.split}", store.skipped)
    if cfg.data.register:
        register_store(store, local_shift=cfg.data.local_shift)
    if cfg.data.holdout_groups:
        train_idx, val_idx = split_by_group(store.pairs, cfg.data.holdout_groups)
    else:
        train_idx, val_idx = split_by_image(store.pairs, cfg.data.val_fraction, cfg.data.split_seed)
    every_item = not cfg.data.holdout_groups and cfg.data.val_fraction == 0  # no validation asked for
    if len(train_idx) == 0 or (len(val_idx) == 0 and not every_item):
        how = "data.holdout_groups" if cfg.data.holdout_groups else "data.val_fraction (a PCB type needs 2 items)"
        raise ConfigError(
            f"the split of the {len(store)} readable items of {cfg.data.root} by {how} leaves "
            f"{len(train_idx)} for training and {len(val_idx)} for validation; both need at least one"
        )
    train_store, val_store = store.subset(train_idx), store.subset(val_idx)
    train_index = patches_of(train_store, cfg.data.patch, cfg.data.stride)
    val_index = patches_of(val_store, cfg.data.patch, cfg.data.stride, groups=store.groups)
    if len(train_index) == 0 or (len(val_index) == 0 and len(val_store) > 0):
        raise ConfigError(f"data.patch={cfg.data.patch} px is larger than the boards of {cfg.data.root}: no patch")
    return SplitData(train_store, train_index, val_store, val_index)


def epoch_order(n: int, epoch: int, seed: int, batch: int, dist: DistInfo) -> list[np.ndarray]:
    """This process's batches of triplet numbers for ``epoch``: a seeded permutation, padded by
    wrapping so every process runs the same number of steps, shared out round-robin."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    steps = math.ceil(n / (batch * dist.world))
    order = np.resize(order, steps * batch * dist.world)
    mine = order[dist.rank :: dist.world]
    return [mine[i * batch : (i + 1) * batch] for i in range(steps)]


class RunFolder:
    """Files of a run; only the main process writes."""

    def __init__(self, path: str | Path, main: bool = True) -> None:
        self.path = Path(path)
        self.main = main
        self.metrics = self.path / "metrics.jsonl"
        self.last = self.path / "checkpoints" / "last.pt"
        self.best = self.path / "checkpoints" / "best.pt"

    def log(self, record: dict) -> None:
        """Append one record to metrics.jsonl (flushed at once)."""
        if self.main:
            append_jsonl(self.metrics, record)

    def records(self) -> list[dict]:
        """All records of metrics.jsonl (a last line cut by a kill is skipped)."""
        return read_jsonl(self.metrics)

    def truncate_after(self, global_step: int, epoch: int) -> None:
        """Drop records a killed run wrote after its last checkpoint."""
        if not self.main:
            return
        kept = [
            r
            for r in self.records()
            if (r["kind"] == "step" and r["global_step"] <= global_step)
            or (r["kind"] == "epoch" and r["epoch"] < epoch)
        ]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))


def validation_sample(cfg: Config, data: SplitData) -> tuple[PatchIndex, PatchIndex]:
    """The training patches that calibrate each epoch's threshold and the validation patches scored.

    At most ``train.val_max_patches`` each. The validation sample depends on the split seed only, so
    runs of different training seeds (the repeats of an experiment) are scored on the same patches.
    """
    calib = subsample(data.train_index, cfg.train.val_max_patches, cfg.train.seed + 1)
    val = subsample(data.val_index, cfg.train.val_max_patches, cfg.data.split_seed + 2)
    return calib, val


def validate_epoch(model: torch.nn.Module, data: SplitData, cfg: Config, device: torch.device) -> dict:
    """Calibrate the paper's threshold on training patches, then score the validation patches at it
    (the ``val_*`` figures are None when the run trains on every item, ``data.val_fraction=0``).

    The network is applied in one view whatever ``model.views`` says: test-time views are how a trained
    model is applied (``calibrate --views``), not what picks its best epoch."""
    net = unwrap(model)
    views, net.cfg.views = net.cfg.views, 1
    try:
        return _validate(model, data, cfg, device)
    finally:
        net.cfg.views = views


def _validate(model: torch.nn.Module, data: SplitData, cfg: Config, device: torch.device) -> dict:
    spec = PatchSpec.from_config(cfg)
    calib, val = validation_sample(cfg, data)
    cache = ReferenceCache()  # the two passes run at the same weights
    train_scores = score_index(model, data.train_store, calib, spec, device, cfg.train.amp, cache=cache)
    cal = choose_threshold(train_scores.scores, train_scores.labels, "accuracy")
    unwrap(model).threshold.fill_(cal.threshold)
    if len(val) == 0:
        none = dict.fromkeys(("accuracy", "balanced_accuracy", "auroc", "recall", "false_alarm_rate"))
        m = none | {"n": 0}
    else:
        val_scores = score_index(model, data.val_store, val, spec, device, cfg.train.amp, cache=cache)
        m = binary_metrics(val_scores.scores, val_scores.labels, cal.threshold)
    return {
        "threshold": cal.threshold,
        "train_accuracy": cal.value,
        "val_accuracy": m["accuracy"],
        "val_balanced_accuracy": m["balanced_accuracy"],
        "val_auroc": m["auroc"],
        "val_recall": m["recall"],
        "val_false_alarm_rate": m["false_alarm_rate"],
        "val_patches": m["n"],
    }


#: Settings a resumed run may change (see the module docstring); ``train.epochs`` with ``scheduler=none`` only.
RESUME_MAY_CHANGE = (
    "train.device",
    "train.amp",
    "train.cpu_amp",
    "train.log_every",
    "train.checkpoint_every",
    "train.epochs",
    "data.workers",
    "data.cache_dir",
    "data.root",
)
#: Settings a run derives from its data rather than takes from the user.
_DERIVED = ("model.num_classes",)
#: Files of a run that a fresh start replaces (``config.yaml`` and ``split.json`` are rewritten anyway).
_STALE = ("metrics.jsonl", "summary.json", "learning_curve.png", "checkpoints/best.pt")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def check_resume(saved: dict, cfg: Config, epochs_done: int) -> None:
    """Refuse resuming a run saved with config ``saved`` under ``cfg``, naming the settings that differ
    and may not change (see the module docstring).

    Raises:
        ConfigError: a setting outside :data:`RESUME_MAY_CHANGE` differs, ``train.epochs`` differs under
            the cosine schedule, or it is below the ``epochs_done`` already trained.
    """
    old, new = _flat(from_dict(saved).to_dict()), _flat(cfg.to_dict())
    differ = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in _DERIVED)
    refused = [k for k in differ if k not in RESUME_MAY_CHANGE]
    if refused:
        changes = "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in refused)
        raise ConfigError(
            f"--resume cannot change {', '.join(refused)} of the run ({changes}): resume with the run's "
            "config.yaml, or train a new run into another --out"
        )
    if "train.epochs" in differ and cfg.train.scheduler == "cosine":
        raise ConfigError(
            f"--resume cannot change train.epochs ({old['train.epochs']} -> {cfg.train.epochs}) under "
            "train.scheduler=cosine: the schedule spans the planned epochs; train a new run instead"
        )
    if cfg.train.epochs < epochs_done:
        raise ConfigError(f"train.epochs={cfg.train.epochs} is below the {epochs_done} epochs the run has trained")


def fit(cfg: Config, out_dir: str | Path, resume: bool = False, data: SplitData | None = None) -> dict:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue from ``checkpoints/last.pt``.

    Launched by ``torchrun``, each process trains on its share of every batch of triplets
    (DistributedDataParallel) and only rank 0 writes files.

    Returns:
        The summary (best and final validation figures, time, throughput).

    Raises:
        ConfigError: ``out_dir`` is a file, holds a run (without ``resume``) or no checkpoint (with
            it), or a resume would change the run (see the module docstring).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run")
    dist = init_distributed(cfg.train.device)
    run = RunFolder(out, dist.is_main)
    if run.last.is_file() and not resume:
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not run.last.is_file():
        raise ConfigError(f"{out_dir} holds no checkpoint to resume ({run.last} not found); train without --resume")
    try:
        return _fit(cfg, run, resume, dist, data)
    finally:
        cleanup()


def _split_record(data: SplitData) -> dict:
    return {
        "train": [p.name for p in data.train_store.pairs],
        "val": [p.name for p in data.val_store.pairs],
        "train_patches": data.train_index.stats(),
        "val_patches": data.val_index.stats(),
    }


def _check_same_split(run: RunFolder, split: dict, groups: list[str], ck: dict) -> None:
    """Refuse resuming on data that splits differently from the run's ``split.json`` (or groups)."""
    saved_path = run.path / "split.json"
    saved = json.loads(saved_path.read_text()) if saved_path.is_file() else None
    items_differ = saved is not None and (saved.get("train"), saved.get("val")) != (split["train"], split["val"])
    if items_differ or list(ck.get("groups", groups)) != groups:
        raise ConfigError(
            f"the data no longer gives the split of {run.path} (split.json: training and validation items, "
            "PCB types): resume on the same data, or train a new run"
        )


def _fit(cfg: Config, run: RunFolder, resume: bool, dist: DistInfo, data: SplitData | None) -> dict:
    ck = load_checkpoint(run.last, map_location=dist.device) if resume else None
    if ck is not None:
        check_resume(ck["config"], cfg, ck["epoch"])
    torch.manual_seed(cfg.train.seed)
    data = data or prepare_data(cfg)
    cfg.model.num_classes = len(data.train_index.groups)
    split = _split_record(data)
    if ck is not None:
        _check_same_split(run, split, data.train_index.groups, ck)
    objective = objective_for(cfg)
    dataset, criterion = objective.dataset(cfg, data), objective.loss(cfg.train)
    warn_cpu_amp(dist.device, cfg.train.cpu_amp)
    model: torch.nn.Module = build_model(cfg.model).to(dist.device)
    criterion = criterion.to(dist.device)
    optimizer = make_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    steps_per_epoch = len(epoch_order(len(dataset), 0, cfg.train.seed, cfg.train.batch_size, dist))
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = (
        cosine_schedule(optimizer, total_steps, cfg.train.warmup_steps) if cfg.train.scheduler == "cosine" else None
    )
    epoch, start_step, global_step, best = 0, 0, 0, {"val_auroc": -1.0}
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler"):
            scheduler.load_state_dict(ck["scheduler"])
        epoch, start_step, global_step, best = ck["epoch"], ck["step"], ck["global_step"], ck["best"]
    if dist.is_main:  # every check passed: now the folder may change
        run.path.mkdir(parents=True, exist_ok=True)
        if ck is not None:
            run.truncate_after(global_step, epoch)
            log.info("resuming %s at epoch %d step %d", run.path, epoch, start_step)
        else:
            for name in _STALE:  # the files of an attempt killed before its first checkpoint
                (run.path / name).unlink(missing_ok=True)
        write_text(run.path / "config.yaml", dump_config(cfg))
        write_json(run.path / "split.json", split)
        write_json(run.path / "data.json", describe_data(cfg.data.root, cfg.data.split))  # what it learned from
    if dist.world > 1:
        ddp_ids = [dist.device.index] if dist.device.type == "cuda" else None
        model = DistributedDataParallel(
            model, device_ids=ddp_ids, find_unused_parameters=objective.has_unused_parameters(cfg.train)
        )

    def checkpoint(path: Path, ep: int, step: int) -> None:
        if dist.is_main:
            save_checkpoint(
                path,
                {
                    "config": cfg.to_dict(),
                    "groups": data.train_index.groups,
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler else None,
                    "epoch": ep,
                    "step": step,
                    "global_step": global_step,
                    "best": best,
                },
            )

    t_start = time.perf_counter()
    last_tick = [time.perf_counter()]
    bar = tqdm(
        total=total_steps,
        initial=epoch * steps_per_epoch + start_step,
        disable=not dist.is_main or quiet(),
        desc="train",
        unit="step",
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,  # a log file gets a line every 30 s, not every step
    )

    def on_step(ep: int, step: int, s: StepStats) -> None:
        nonlocal global_step
        global_step += 1
        now = time.perf_counter()
        rate = s.items * dist.world / max(now - last_tick[0], 1e-9)
        last_tick[0] = now
        bar.update(1)
        bar.set_postfix(epoch=ep, loss=f"{s.loss:.4f}", per_s=f"{rate:.1f}", refresh=False)
        if global_step % cfg.train.log_every == 0 or step == steps_per_epoch - 1:
            run.log(
                {
                    "kind": "step",
                    "epoch": ep,
                    "step": step,
                    "global_step": global_step,
                    "loss": s.loss,
                    **{f"loss_{k}": v for k, v in s.parts.items()},
                    "lr": optimizer.param_groups[0]["lr"],
                    "items_per_s": rate,
                }
            )
        if (step + 1) % cfg.train.checkpoint_every == 0 and step + 1 < steps_per_epoch:
            checkpoint(run.last, ep, step + 1)

    # a run resumed after its last epoch (killed before its summary) reports that epoch's figures
    final: dict = next((r for r in reversed(run.records()) if r.get("kind") == "epoch"), {}) if ck else {}
    while epoch < cfg.train.epochs:
        batches = epoch_order(len(dataset), epoch, cfg.train.seed, cfg.train.batch_size, dist)[start_step:]
        loader = DataLoader(
            Subset(dataset, np.concatenate(batches).tolist()) if batches else [],
            batch_size=cfg.train.batch_size,
            shuffle=False,
            num_workers=cfg.data.workers,
        )
        t0 = time.perf_counter()
        train_loss = train_one_epoch(
            model,
            criterion,
            optimizer,
            scheduler,
            loader,
            dist.device,
            epoch,
            start_step,
            cfg.train.amp,
            on_step,
            cpu_amp=cfg.train.cpu_amp,
        )
        train_seconds = time.perf_counter() - t0
        barrier()
        if dist.is_main:
            final = validate_epoch(model, data, cfg, dist.device)
            final.update(
                kind="epoch",
                epoch=epoch,
                train_loss=train_loss,
                global_step=global_step,
                train_seconds=train_seconds,
                items_per_s=len(batches) * cfg.train.batch_size * dist.world / max(train_seconds, 1e-9),
            )
            if final["val_patches"]:
                log.info("epoch %d: val accuracy %.4f, AUROC %.4f", epoch, final["val_accuracy"], final["val_auroc"])
            else:
                log.info("epoch %d: training accuracy %.4f (no validation items)", epoch, final["train_accuracy"])
            run.log(final)
            # without validation items (data.val_fraction=0) the latest epoch is the best one known
            if not final["val_patches"] or (final["val_auroc"] or 0.0) > (best["val_auroc"] or 0.0):
                best = {k: final[k] for k in ("epoch", "val_accuracy", "val_auroc", "threshold")}
                checkpoint(run.best, epoch + 1, 0)
        epoch, start_step = epoch + 1, 0
        checkpoint(run.last, epoch, 0)
        barrier()
    bar.close()
    summary = {
        "best": best,
        "final": final,
        "seconds": time.perf_counter() - t_start,
        "train_patches": len(data.train_index),
        "val_patches": len(data.val_index),
    }
    if dist.is_main:
        write_json(run.path / "summary.json", summary)
        _plot(run)
    return summary


def _plot(run: RunFolder) -> None:
    try:
        from pcbsiam.viz.plots import plot_learning_curves

        plot_learning_curves(run.records(), run.path / "learning_curve.png", title=run.path.name)
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a finished run
        log.warning("learning curve not drawn: %s", exc)
