"""Repeated ablation experiments: a grid of configurations trained with several seeds, summarised as
the paper's tables (Dai et al. 2023, Tables 1-4) and learning-curve figure (Fig. 4).

- :mod:`~pcbsiam.experiment.grid`: grid files (base config, overrides, seeds, families of cells).
- :mod:`~pcbsiam.experiment.plan`: the grid resolved into distinct cells and their runs.
- :mod:`~pcbsiam.experiment.runner`: training the runs, resumable, with failures recorded.
- :mod:`~pcbsiam.experiment.report`: results, tables and figure from the finished runs.

The output folder::

    experiment.json        the resolved plan: families, variants, cells with their configs, seeds
    runs/<cell>/seed<k>/   one training run folder each (see :mod:`pcbsiam.train.fit`)
    failures.jsonl         one record per run that raised (the others go on)
    results.json           per cell: per-seed figures and mean ± std; per family: table rows
    tables.md              one markdown table per family, with the paper's figures beside ours
    learning_curves.png    validation accuracy per epoch, mean over seeds, one panel per family
"""

from pcbsiam.experiment.grid import GRID_DIR, Family, Grid, load_grid
from pcbsiam.experiment.plan import Cell, Plan, Run, plan_experiment
from pcbsiam.experiment.report import ExperimentReport, render_tables, run_figures, write_report
from pcbsiam.experiment.runner import run_experiment

__all__ = [
    "Cell",
    "ExperimentReport",
    "Family",
    "Grid",
    "Plan",
    "Run",
    "GRID_DIR",
    "load_grid",
    "plan_experiment",
    "render_tables",
    "run_experiment",
    "run_figures",
    "write_report",
]
