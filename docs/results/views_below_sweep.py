"""F, AP and the share of windows given the other test-time views, per ``views_below`` (`detect --views-below`).

    python docs/results/views_below_sweep.py [--hold=group13000,group77000] [--fine-band=1] VIEWS DETECTOR [...]

For each ``views_below`` in :data:`CUTS` (None: every window gets every view) the detector runs over the split's
boards (decoded once beforehand) and prints P / R / F / AP %, mousebite recall, the share of windows that got
the other views and boards/s (decoding aside; a figure only when nothing else runs).
"""

from __future__ import annotations

import sys
import time

from pcbsiam.cli.detect import select_boards
from pcbsiam.data.images import load_gray
from pcbsiam.data.transforms import DIHEDRAL_VIEWS
from pcbsiam.detection.learned import LearnedDetector, load_detector
from pcbsiam.evaluation.detection import evaluate_detections

CUTS = (None, 0.999, 0.99, 0.98, 0.95, 0.9)


def main(args: list[str]) -> None:
    """Print one line per cut."""
    opts = {}
    while args[0].startswith("--"):
        key, value = args.pop(0)[2:].split("=", 1)
        opts[key] = value
    views, models = int(args[0]), args[1:]
    pairs, _, _ = select_boards("../shared/datasets/DeepPCB", "trainval.txt", "val", opts.get("hold"))
    boards = [(p, load_gray(p.tested), load_gray(p.template)) for p in pairs]
    det = load_detector(models if len(models) > 1 else models[0], views=views, fine_band=int(opts.get("fine-band", 0)))
    counts = {"windows": 0, "other views": 0}
    views_of = LearnedDetector._views

    def counting(self, t, r, h, chosen):  # noqa: ANN001, ANN202 - the detector's own method, counting windows
        counts["windows"] += len(t) if chosen[0] == DIHEDRAL_VIEWS[0] else 0
        counts["other views"] += len(t) if len(chosen) > 1 or chosen[0] != DIHEDRAL_VIEWS[0] else 0
        return views_of(self, t, r, h, chosen)

    LearnedDetector._views = counting
    for cut in CUTS:
        det.views_below = cut
        counts.update({"windows": 0, "other views": 0})
        rows = []
        start = time.perf_counter()
        for p, tested, template in boards:
            rows.append((p.name, p.boxes, det.detect(tested, template).as_array()))
        seconds = time.perf_counter() - start
        r = evaluate_detections(rows)
        mb = r.to_dict()["per_type"]["mousebite"]["recall"]
        figures = " / ".join(f"{100 * v:.2f}" for v in (r.precision, r.recall, r.f_score, r.ap))
        share = counts["other views"] / max(counts["windows"], 1)
        print(
            f"views_below {cut}: P / R / F / AP {figures}, mousebite {100 * mb:.2f}, "
            f"other views on {100 * share:.1f} % of {counts['windows']} windows, {len(boards) / seconds:.2f} boards/s",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
