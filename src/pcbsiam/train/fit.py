"""A training run: data, split, triplets, loops, checkpoints and the run folder's files.

Run folder::

    config.yaml          the full configuration
    split.json           names of training and validation items
    metrics.jsonl        one record per logged step and per epoch
    checkpoints/last.pt  resumable state (model, optimizer, scheduler, position)
    checkpoints/best.pt  the epoch of best validation AUROC, threshold inside
    learning_curve.png   loss and validation accuracy / AUROC
    summary.json         final figures
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
from pcbsiam.config import Config, dump_config
from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.protocol import PatchIndex, subsample
from pcbsiam.data.sampler import split_by_group, split_by_image
from pcbsiam.data.sources import patches_of, read_boards
from pcbsiam.data.store import BoardStore, load_store, register_store
from pcbsiam.devices import unwrap
from pcbsiam.errors import ConfigError
from pcbsiam.evaluation.calibration import choose_threshold
from pcbsiam.evaluation.metrics import binary_metrics
from pcbsiam.evaluation.scoring import ReferenceCache, score_index
from pcbsiam.io import read_jsonl, write_json, write_text
from pcbsiam.models import build_model
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
    if cfg.data.register:
        register_store(store, local_shift=cfg.data.local_shift)
    if len(store) == 0:
        raise ConfigError(f"no readable items in {cfg.data.root} ({len(store.skipped)} skipped)")
    if cfg.data.holdout_groups:
        train_idx, val_idx = split_by_group(store.pairs, cfg.data.holdout_groups)
    else:
        train_idx, val_idx = split_by_image(store.pairs, cfg.data.val_fraction, cfg.data.split_seed)
    train_store, val_store = store.subset(train_idx), store.subset(val_idx)
    train_index = patches_of(train_store, cfg.data.patch, cfg.data.stride)
    val_index = patches_of(val_store, cfg.data.patch, cfg.data.stride, groups=store.groups)
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
            with open(self.metrics, "a") as fh:
                fh.write(json.dumps(record) + "\n")

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
    """Calibrate the paper's threshold on training patches, then score the validation patches at it."""
    spec = PatchSpec.from_config(cfg)
    calib, val = validation_sample(cfg, data)
    cache = ReferenceCache()  # the two passes run at the same weights
    train_scores = score_index(model, data.train_store, calib, spec, device, cfg.train.amp, cache=cache)
    val_scores = score_index(model, data.val_store, val, spec, device, cfg.train.amp, cache=cache)
    cal = choose_threshold(train_scores.scores, train_scores.labels, "accuracy")
    m = binary_metrics(val_scores.scores, val_scores.labels, cal.threshold)
    unwrap(model).threshold.fill_(cal.threshold)
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


def fit(cfg: Config, out_dir: str | Path, resume: bool = False, data: SplitData | None = None) -> dict:
    """Train ``cfg`` into ``out_dir``; with ``resume`` continue from ``checkpoints/last.pt``.

    Launched by ``torchrun``, each process trains on its share of every batch of triplets
    (DistributedDataParallel) and only rank 0 writes files.

    Returns:
        The summary (best and final validation figures, time, throughput).
    """
    dist = init_distributed(cfg.train.device)
    run = RunFolder(out_dir, dist.is_main)
    if run.last.is_file() and not resume:
        raise ConfigError(f"{out_dir} already holds a run; pass --resume to continue it or choose another --out")
    try:
        return _fit(cfg, run, resume and run.last.is_file(), dist, data)
    finally:
        cleanup()


def _fit(cfg: Config, run: RunFolder, resume: bool, dist: DistInfo, data: SplitData | None) -> dict:
    torch.manual_seed(cfg.train.seed)
    data = data or prepare_data(cfg)
    cfg.model.num_classes = len(data.train_index.groups)
    if dist.is_main:
        run.path.mkdir(parents=True, exist_ok=True)
        write_text(run.path / "config.yaml", dump_config(cfg))
        write_json(
            run.path / "split.json",
            {
                "train": [p.name for p in data.train_store.pairs],
                "val": [p.name for p in data.val_store.pairs],
                "train_patches": data.train_index.stats(),
                "val_patches": data.val_index.stats(),
            },
        )
    objective = objective_for(cfg)
    dataset, criterion = objective.dataset(cfg, data), objective.loss(cfg.train)
    model: torch.nn.Module = build_model(cfg.model).to(dist.device)
    criterion = criterion.to(dist.device)
    optimizer = make_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay)
    steps_per_epoch = len(epoch_order(len(dataset), 0, cfg.train.seed, cfg.train.batch_size, dist))
    total_steps = steps_per_epoch * cfg.train.epochs
    scheduler = (
        cosine_schedule(optimizer, total_steps, cfg.train.warmup_steps) if cfg.train.scheduler == "cosine" else None
    )
    epoch, start_step, global_step, best = 0, 0, 0, {"val_auroc": -1.0}
    if resume:
        ck = load_checkpoint(run.last, map_location=dist.device)
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        if scheduler is not None and ck.get("scheduler"):
            scheduler.load_state_dict(ck["scheduler"])
        epoch, start_step, global_step, best = ck["epoch"], ck["step"], ck["global_step"], ck["best"]
        run.truncate_after(global_step, epoch)
        log.info("resuming %s at epoch %d step %d", run.path, epoch, start_step)
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
        disable=not dist.is_main,
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

    final: dict = {}
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
            model, criterion, optimizer, scheduler, loader, dist.device, epoch, start_step, cfg.train.amp, on_step
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
            log.info("epoch %d: val accuracy %.4f, AUROC %.4f", epoch, final["val_accuracy"], final["val_auroc"])
            run.log(final)
            if (final["val_auroc"] or 0.0) > best["val_auroc"]:
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
