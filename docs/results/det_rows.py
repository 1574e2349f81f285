"""Rows of the detection tables in docs/RESULTS.md from `pcbsiam detect --batch` folders.

    python docs/results/det_rows.py runs/det17/val-s0-views1 runs/det17/val-s01-views4 ...

For each folder's detection.json: P / R / F / AP % and recall per type (%) in the DeepPCB order, as markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pcbsiam.data.defects import DEFECT_CODES


def main(folders: list[str]) -> None:
    """Print one row per folder."""
    for folder in folders:
        d = json.loads((Path(folder) / "detection.json").read_text())
        figures = " / ".join(f"{100 * d[k]:.2f}" for k in ("precision", "recall", "f_score", "ap"))
        per_type = " | ".join(f"{100 * d['per_type'][name]['recall']:.2f}" for name in DEFECT_CODES)
        print(f"| {folder} | {figures} | {per_type} |")


if __name__ == "__main__":
    main(sys.argv[1:])
