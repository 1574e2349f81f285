"""Choose the example pairs shipped with the ready model and write the split it trains on.

    python docs/results/ready/make_examples.py ../shared/datasets/DeepPCB

One board pair per DeepPCB group of trainval: the one whose annotations hold the most distinct defect types
(the first in file order on a tie). They are copied, in DeepPCB's own layout with an ``examples.txt`` split,
into ``src/pcbsiam/ready/examples/`` with DeepPCB's MIT licence, and left out of the ready model's training:
``docs/results/ready/train.txt`` lists every other trainval item.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pcbsiam.data.deeppcb import find_pcbdata

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[2] / "src" / "pcbsiam" / "ready" / "examples"
NOTICE = """# Example board pairs

Seven tested boards with their defect-free templates and defect boxes ({names}), one per board design
(group) of the DeepPCB data set's trainval part, copied as they are, in DeepPCB's layout
(`PCBData/examples.txt` is their split file). DeepPCB: Tang et al., "Online PCB defect detector on a new PCB
defect dataset", 2019, https://github.com/tangsanli5201/DeepPCB, MIT licence (LICENSE here).
The ready model `deeppcb` was trained on the rest of trainval: these pairs are not among its training boards.
"""


def main(root: str) -> None:
    base = find_pcbdata(root)
    lines = [x for x in (base / "trainval.txt").read_text().splitlines() if x.strip()]
    best: dict[str, tuple[int, str]] = {}
    for line in lines:
        image, ann = line.split()
        kinds = {row.split()[-1] for row in (base / ann).read_text().split("\n") if row.strip()}
        group = image.split("/")[0]
        if group not in best or len(kinds) > best[group][0]:
            best[group] = (len(kinds), line)
    chosen = [best[g][1] for g in sorted(best)]
    if EXAMPLES.exists():
        shutil.rmtree(EXAMPLES)
    out = EXAMPLES / "PCBData"
    for line in chosen:
        image, ann = line.split()
        stem = Path(image).with_suffix("")
        for suffix in ("_test.jpg", "_temp.jpg"):
            src = base / stem.parent / f"{stem.name}{suffix}"
            (out / stem.parent).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / stem.parent / src.name)
        (out / ann).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / ann, out / ann)
    (out / "examples.txt").write_text("".join(f"{x}\n" for x in chosen))
    shutil.copyfile(base.parent / "LICENSE", EXAMPLES / "LICENSE")
    names = [Path(x.split()[0]).stem for x in chosen]
    (EXAMPLES / "README.md").write_text(NOTICE.format(names=", ".join(names)))
    (HERE / "train.txt").write_text("".join(f"{x}\n" for x in lines if x not in chosen))
    print(f"{len(chosen)} examples: {names}; {len(lines) - len(chosen)} to train on")


if __name__ == "__main__":
    main(sys.argv[1])
