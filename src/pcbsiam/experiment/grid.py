"""Grid files: a base config, shared overrides, seeds and families of cells, read from YAML and checked.

A grid file names a base config, overrides shared by every cell, the seeds, and families of cells;
each cell is a list of ``section.key=value`` overrides::

    base: cpu-small                     # preset name or config file
    overrides: ["train.epochs=2"]       # applied to every cell
    seeds: [0, 1, 2]                    # repeat r trains with train.seed = seeds[r]; default 0..N-1
    repeats: 3                          # default number of repeats
    families:
      backbone:
        title: "Table 1: backbone"
        paper: {resnet50: "95.42 ± 0.31"}   # the paper's accuracy (%) where known
        cells: {resnet18: [], resnet50: ["model.backbone=resnet50"]}

Quote an override holding brackets (``"model.scales=[2,3,4]"``), or YAML reads it as a list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pcbsiam.config import resolve_shipped
from pcbsiam.errors import ConfigError

__all__ = ["GRID_DIR", "Family", "Grid", "grid_from_dict", "load_grid", "resolve_grid"]

GRID_DIR = Path(__file__).parent.parent / "configs" / "grids"


@dataclass
class Family:
    """One table of the paper: variants of one setting.

    Attributes:
        name: short name (``backbone``), the figure panel's title.
        title: the table's heading (``Table 1: backbone``).
        cells: variant name -> its overrides.
        paper: variant name -> the paper's accuracy in % (a number or a text such as ``"95.42 ± 0.31"``).
    """

    name: str
    title: str
    cells: dict[str, list[str]]
    paper: dict[str, float | str | None] = field(default_factory=dict)


@dataclass
class Grid:
    """A grid file: a base config, shared overrides, seeds and families of cells."""

    base: str
    families: dict[str, Family]
    overrides: list[str] = field(default_factory=list)
    seeds: list[int] | None = None
    repeats: int | None = None
    description: str = ""
    source: str = ""

    def seeds_for(self, repeats: int | None = None) -> list[int]:
        """The seeds of ``repeats`` repeats (default: the grid's ``repeats``, else all its seeds, else 1)."""
        n = repeats if repeats is not None else self.repeats
        if n is None:
            n = len(self.seeds) if self.seeds else 1
        if n < 1:
            raise ConfigError(f"the number of repeats must be at least 1, got {n}")
        if self.seeds is None:
            return list(range(n))
        if n > len(self.seeds):
            raise ConfigError(
                f"{n} repeats asked but the grid {self.source or ''} lists only {len(self.seeds)} seeds "
                f"{self.seeds}; add seeds to the grid or ask for fewer repeats"
            )
        return list(self.seeds[:n])


def _override_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{where} must be a list of 'section.key=value' strings, got {value!r}; quote an override "
            'holding brackets or commas, e.g. "model.scales=[2,3,4]"'
        )
    return list(value)


def _check_keys(d: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, d)) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; valid: {sorted(allowed)}")


def grid_from_dict(d: dict[str, Any], source: str = "") -> Grid:
    """Build and check a :class:`Grid` from the dict of a grid file.

    Raises:
        ConfigError: on a missing or malformed entry, with its place in the file.
    """
    where = source or "the grid"
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a YAML mapping with 'base' and 'families'")
    _check_keys(d, {"base", "overrides", "seeds", "repeats", "families", "description"}, where)
    if not d.get("base"):
        raise ConfigError(f"{where} has no 'base': give a preset name (cpu-small, paper) or a config file")
    fams = d.get("families")
    if not isinstance(fams, dict) or not fams:
        raise ConfigError(f"{where} has no 'families': give at least one family with 'cells'")
    seeds = d.get("seeds")
    if seeds is not None and (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):
        raise ConfigError(f"'seeds' in {where} must be a non-empty list of integers, got {seeds!r}")
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ConfigError(f"'seeds' in {where} repeats a seed: {seeds}")
    repeats = d.get("repeats")
    if repeats is not None and (not isinstance(repeats, int) or repeats < 1):
        raise ConfigError(f"'repeats' in {where} must be a positive integer, got {repeats!r}")
    families: dict[str, Family] = {}
    for fname, fd in fams.items():
        fname = str(fname)
        fwhere = f"family {fname!r} of {where}"
        if not isinstance(fd, dict):
            raise ConfigError(f"{fwhere} must be a mapping with 'cells' (and optionally 'title', 'paper')")
        _check_keys(fd, {"title", "cells", "paper"}, fwhere)
        cells_d = fd.get("cells")
        if not isinstance(cells_d, dict) or not cells_d:
            raise ConfigError(f"{fwhere} has no 'cells': give variant names with their overrides")
        cells = {str(v): _override_list(o, f"cell {v!r} of {fwhere}") for v, o in cells_d.items()}
        paper_d = fd.get("paper") or {}
        if not isinstance(paper_d, dict):
            raise ConfigError(f"'paper' of {fwhere} must map variant names to the paper's accuracy (%)")
        paper: dict[str, float | str | None] = {}
        for v, x in paper_d.items():
            if str(v) not in cells:
                raise ConfigError(f"'paper' of {fwhere} names {v!r}, which is not one of its cells {list(cells)}")
            if x is not None and (isinstance(x, bool) or not isinstance(x, int | float | str)):
                raise ConfigError(f"the paper's figure for {v!r} in {fwhere} must be a number or text, got {x!r}")
            paper[str(v)] = x
        families[fname] = Family(fname, str(fd.get("title") or fname), cells, paper)
    return Grid(
        base=str(d["base"]),
        families=families,
        overrides=_override_list(d.get("overrides"), f"'overrides' of {where}"),
        seeds=list(seeds) if seeds is not None else None,
        repeats=repeats,
        description=str(d.get("description") or ""),
        source=source,
    )


def resolve_grid(name_or_path: str | Path) -> Path:
    """A grid file path, or the name of a shipped grid (``paper``, ``cpu``)."""
    return resolve_shipped(name_or_path, GRID_DIR, "grid")


def load_grid(name_or_path: str | Path) -> Grid:
    """Read a grid file (or a shipped grid by name) and check it."""
    p = resolve_grid(name_or_path)
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(
            f'{p} is not valid YAML (quote overrides holding brackets, e.g. "model.scales=[2,3,4]"): {exc}'
        ) from exc
    return grid_from_dict(d, str(p))
