import argparse
import json
import os
from pathlib import Path

import pytest
import yaml

from pcbsiam.cli.experiment import register
from pcbsiam.errors import ConfigError
from pcbsiam.experiment import load_grid, plan_experiment, run_experiment, runner, write_report
from tests.conftest import TINY_TRAIN


def write_grid(path: Path, families: dict, **top: object) -> Path:
    grid = {"base": "tiny", "overrides": list(TINY_TRAIN), "families": families, **top}
    path.write_text(yaml.safe_dump(grid, allow_unicode=True, sort_keys=False))
    return path


TWO_CELLS = {
    "loss": {
        "title": "Table 4: loss",
        "paper": {"triplet+ce": "95.42 ± 0.31", "ce": 90.5},
        "cells": {"triplet+ce": [], "ce": ["train.loss=ce"]},
    },
    "embedding": {"title": "Table 2: embedding size", "cells": {"8": ["model.embedding_dim=8"]}},
}


def cli_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcbsiam")
    register(p.add_subparsers(dest="command", required=True))
    return p


def test_identical_cells_are_merged_and_selected_by_name(tmp_path: Path) -> None:
    fams = {
        "a": {"cells": {"base": [], "ce": ["train.loss=ce"]}},
        "b": {
            "cells": {
                "base again": ["model.embedding_dim=8"],  # TINY_TRAIN already sets 8
                "other device": ["train.device=cpu", "train.log_every=3"],  # how, not what: same cell
                "s432": ["model.scales=[4,3,2]"],
                "s234": ["model.scales=[2,3,4]"],
            }
        },
    }
    plan = plan_experiment(write_grid(tmp_path / "g.yaml", fams, seeds=[7, 3, 5]), repeats=2)
    assert len(plan.cells) == 3
    base = plan.families["a"]["base"]
    assert plan.families["b"]["base again"] == plan.families["b"]["other device"] == base
    assert plan.families["b"]["s432"] == plan.families["b"]["s234"] != base
    assert plan.cells[base].variants == [("a", "base"), ("b", "base again"), ("b", "other device")]
    assert plan.seeds == [7, 3]
    runs = plan.runs(tmp_path / "out")
    assert [r.seed for r in runs] == [7, 7, 7, 3, 3, 3]  # repeat by repeat
    assert runs[0].path == tmp_path / "out" / "runs" / base / "seed7"
    assert {c.id for c in plan.select(["ce"])} == {plan.families["a"]["ce"]}
    assert len(plan.select(["b"])) == 2 and len(plan.select(["a/base", base])) == 1
    with pytest.raises(ConfigError, match="names no family"):
        plan.select(["nope"])
    with pytest.raises(ConfigError, match="lists only 3 seeds"):
        plan_experiment(tmp_path / "g.yaml", repeats=4)


def test_grid_file_errors_are_sentences(tmp_path: Path) -> None:
    p = tmp_path / "g.yaml"
    p.write_text("base: tiny\nfamilies:\n  s:\n    cells:\n      x: [model.scales=[2,3]]\n")
    with pytest.raises(ConfigError, match="quote"):
        load_grid(p)
    p.write_text("base: tiny\nfamilies:\n  s:\n    cells:\n      x: [{model.scales: [2, 3]}]\n")
    with pytest.raises(ConfigError, match="quote"):
        load_grid(p)
    with pytest.raises(ConfigError, match="not one of its cells"):
        load_grid(write_grid(p, {"f": {"paper": {"y": 1.0}, "cells": {"x": []}}}))
    with pytest.raises(ConfigError, match="cell f/x"):
        plan_experiment(write_grid(p, {"f": {"cells": {"x": ["train.loss=hinge"]}}}))


def test_shipped_grids() -> None:
    for name, n_seeds, base_backbone in (("paper", 6, "resnet50"), ("cpu", 3, "resnet18")):
        plan = plan_experiment(name)
        assert len(plan.seeds) == n_seeds and len(plan.cells) == 17
        assert list(plan.families) == ["backbone", "embedding", "scales", "loss", "mode"]
        shared = plan.families["backbone"][base_backbone]
        assert len(plan.cells[shared].variants) == 5  # the full model is trained once for all tables
        modes = {
            v: plan.cells[plan.families["mode"][v]].config["model"].get("mode", "paper")
            for v in ("paper", "diff", "stack", "stack+band")
        }
        assert modes == {"paper": "paper", "diff": "diff", "stack": "stack", "stack+band": "stack"}
        band = plan.cells[plan.families["mode"]["stack+band"]].config
        assert band["model"]["band"] == 2 and band["data"]["local_shift"] == 3
        assert plan.grid.families["backbone"].paper["resnet50"] == "95.42 ± 0.31"
    assert load_grid("paper").base == "paper"


@pytest.mark.parametrize("name", ["paper", "cpu"])
def test_shipped_grids_fill_the_papers_tables(name: str, tmp_path: Path) -> None:
    plan = plan_experiment(name)
    for fam in ("backbone", "embedding", "scales", "loss"):
        assert plan.grid.families[fam].paper.keys() == plan.grid.families[fam].cells.keys()
        assert all(" ± " in str(x) for x in plan.grid.families[fam].paper.values())
    assert {v: x for v, x in plan.grid.families["mode"].paper.items() if x} == {"paper": "95.42 ± 0.31"}
    (tmp_path / "experiment.json").write_text(json.dumps(plan.manifest()))
    tables = write_report(tmp_path).tables.read_text()  # no run finished: the paper column alone
    rows = {ln.split(" | ")[0].removeprefix("| ").removesuffix(" \\*"): ln for ln in tables.splitlines()}
    assert rows["resnet18"].endswith("| – | – | – | 0 | 93.14 ± 0.26 |")  # a shared cell is starred in cpu
    assert rows["no scale 4"].endswith("| – | – | – | 0 | 95.00 ± 0.22 |")
    assert "compares best with our balanced accuracy" in tables


def fake_fit_factory(calls: list, fail: set) -> object:
    """A stand-in for training.fit writing epoch records and a summary; raises for (loss, seed) in fail."""

    def fake_fit(cfg, out_dir, resume=False, data=None):  # noqa: ANN001, ANN202
        calls.append((Path(out_dir), cfg.train.seed, resume, data))
        if (cfg.train.loss, cfg.train.seed) in fail:
            raise RuntimeError("out of memory (injected)")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        acc = (0.90 if cfg.train.loss == "triplet+ce" else 0.80) + 0.02 * cfg.train.seed
        recs = [
            {"kind": "step", "epoch": 0, "loss": 1.0},
            {"kind": "epoch", "epoch": 0, "val_accuracy": acc - 0.1, "val_auroc": 0.5, "train_seconds": 1.0},
            {"kind": "epoch", "epoch": 1, "val_accuracy": acc, "val_auroc": 0.95 + 0.01 * cfg.train.seed,
             "val_balanced_accuracy": acc, "val_recall": 0.7, "val_false_alarm_rate": 0.1, "train_seconds": 2.0},
        ]  # fmt: skip
        with open(out / "metrics.jsonl", "a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in recs))
        (out / "summary.json").write_text(json.dumps({"best": {"epoch": 1}, "seconds": 4.0}))
        return {}

    return fake_fit


def test_orchestration_skips_resumes_records_failures_and_shares_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list = []
    prepared: list = []
    monkeypatch.setattr(runner, "fit", fake_fit_factory(calls, fail={("ce", 1)}))
    monkeypatch.setattr(runner, "prepare_data", lambda cfg: prepared.append(cfg) or object())
    grid = write_grid(tmp_path / "g.yaml", TWO_CELLS)
    out = tmp_path / "exp"
    with pytest.raises(ConfigError, match="--data"):
        run_experiment(grid, out, repeats=2)

    rep = run_experiment(grid, out, repeats=2, data_root=tmp_path, max_runs=3)
    assert (rep.trained, rep.finished, rep.total) == (3, 3, 4)
    assert len(prepared) == 1 and len({id(c[3]) for c in calls}) == 1  # decoded once, shared
    rep = run_experiment(grid, out, repeats=2, data_root=tmp_path)
    assert len(calls) == 4 and (rep.trained, rep.finished) == (1, 3)
    [failure] = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["seed"] == 1 and "injected" in failure["error"] and failure["variants"] == ["loss/ce"]
    assert rep.failed[0]["run"] == failure["run"]
    assert "injected" in rep.tables.read_text()

    # an interrupted run (checkpoint, no summary) is resumed; one that died before a checkpoint restarts
    plan = plan_experiment(grid, repeats=2, data_root=tmp_path)
    base0, base1 = plan.runs(out, ["triplet+ce"])
    (base0.path / "summary.json").unlink()
    (base0.path / "checkpoints").mkdir()
    (base0.path / "checkpoints" / "last.pt").write_bytes(b"")
    (base1.path / "summary.json").unlink()
    calls.clear()
    monkeypatch.setattr(runner, "fit", fake_fit_factory(calls, fail=set()))
    rep = run_experiment(grid, out, repeats=2, data_root=tmp_path)
    assert sorted((c[0], c[2]) for c in calls) == sorted(
        [(base0.path, True), (base1.path, False), (out / "runs" / failure["run"].split("/", 1)[1], False)]
    )
    assert (rep.finished, rep.failed) == (4, [])
    assert len([ln for ln in (base1.path / "metrics.jsonl").read_text().splitlines() if '"epoch"' in ln]) == 3

    results = json.loads(rep.results.read_text())
    base = results["cells"][base0.cell.id]
    assert base["n"] == 2 and base["variants"] == ["loss/triplet+ce", "embedding/8"]
    assert base["runs"]["1"]["accuracy"] == pytest.approx(0.92) and base["runs"]["1"]["best_epoch"] == 1
    assert base["runs"]["1"]["train_seconds"] == 3.0
    assert base["mean_std"]["accuracy"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert results["open_failures"] == []
    tables = rep.tables.read_text()
    assert "## Table 4: loss" in tables and "## Table 2: embedding size" in tables
    assert "| variant | accuracy (%) mean ± std | AUROC mean ± std | training (s) | n runs | paper (%) |" in tables
    assert "| triplet+ce \\* | 91.00 ± 1.41 | 0.9550 ± 0.0071 | 3 | 2 | 95.42 ± 0.31 |" in tables
    assert "| ce | 81.00 ± 1.41 | 0.9550 ± 0.0071 | 3 | 2 | 90.50 |" in tables
    assert "| 8 \\* | 91.00 ± 1.41 | 0.9550 ± 0.0071 | 3 | 2 |  |" in tables
    assert (out / "learning_curves.png").stat().st_size > 0


def test_tiny_grid_trains_recovers_and_reports(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    real_fit = runner.fit
    calls: list[tuple[str, int, bool]] = []

    def counting_fit(cfg, out_dir, resume=False, data=None):  # noqa: ANN001, ANN202
        calls.append((cfg.train.loss, cfg.train.seed, resume))
        if broken and cfg.train.loss == "ce" and cfg.train.seed == 0:
            raise RuntimeError("disk full (injected)")
        return real_fit(cfg, out_dir, resume=resume, data=data)

    monkeypatch.setattr(runner, "fit", counting_fit)
    grid = write_grid(tmp_path / "g.yaml", TWO_CELLS, overrides=[*TINY_TRAIN, "train.triplets=32"])
    out = tmp_path / "exp"
    broken = True
    rep = run_experiment(grid, out, repeats=2, data_root=synth_root)
    assert len(calls) == 4 and (rep.finished, len(rep.failed)) == (3, 1)
    assert "disk full" in (out / "failures.jsonl").read_text()
    summaries = sorted(out.glob("runs/*/seed*/summary.json"))
    assert len(summaries) == 3
    mtimes = {p: p.stat().st_mtime_ns for p in summaries}

    # simulate a kill: one run lost its summary but kept its checkpoints
    victim = summaries[0]
    victim.unlink()
    broken = False
    calls.clear()
    rep = run_experiment(grid, out, repeats=2, data_root=synth_root)
    assert len(calls) == 2 and ("ce", 0, False) in calls and sum(c[2] for c in calls) == 1  # retry + resume
    assert rep.finished == 4 and rep.failed == []
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if p != victim)
    assert victim.is_file()

    tables = (out / "tables.md").read_text()
    assert tables.count(" ± ") >= 6 and "95.42 ± 0.31" in tables and "| 2 |" in tables
    assert (out / "learning_curves.png").is_file()
    (out / "tables.md").unlink()
    args = cli_parser().parse_args(["experiment", "--report-only", "--out", str(out)])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == str(out / "tables.md")
    assert (out / "tables.md").read_text() == tables
    assert os.path.getsize(out / "results.json") > 0
