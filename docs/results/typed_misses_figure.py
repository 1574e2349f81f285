"""docs/img/lgo-typed-misses.png: six annotated mousebites of the held-out groups 13000 + 77000 that the verifier
trained on the other groups types otherwise (tested crop with the annotation in red, template crop beside it).

    python docs/results/typed_misses_figure.py   # from the repository root

The cases and the verifier's verdicts are those `docs/results/det_misses.py` lists for
runs/det19/lgo-s0-g2-v4-fine (docs/RESULTS.md, ninth round).
"""

from __future__ import annotations

from PIL import Image, ImageDraw
from sweep_common import DATA

from pcbsiam.data.sources import read_boards

#: (image id, x1, y1, width, height of the annotation, what the verifier said).
CASES = [
    ("13000006", 527, 205, 39, 60, "open 0.98"),
    ("13000046", 138, 508, 67, 39, "open 0.72"),
    ("13000063", 347, 147, 38, 35, "open 0.88"),
    ("13000112", 262, 91, 75, 58, "open 0.60"),
    ("13000052", 363, 406, 34, 29, "pin-hole 1.00"),
    ("77000084", 538, 252, 35, 34, "open 0.61"),
]
SIDE = 120  # crop side, px


def cell(name: str, x: int, y: int, w: int, h: int, said: str) -> Image.Image:
    """Tested and template crops of one case, side by side, with a caption."""
    pair = {p.name: p for p in read_boards(DATA, "trainval.txt").pairs}[name]
    cx, cy = x + w // 2, y + h // 2
    box = (cx - SIDE // 2, cy - SIDE // 2, cx + SIDE // 2, cy + SIDE // 2)
    tested = Image.open(pair.tested).convert("RGB").crop(box)
    template = Image.open(pair.template).convert("RGB").crop(box)
    drawn = (x - box[0], y - box[1], x + w - box[0], y + h - box[1])
    ImageDraw.Draw(tested).rectangle(drawn, outline=(230, 0, 0), width=2)
    out = Image.new("RGB", (2 * SIDE + 6, SIDE + 30), (255, 255, 255))
    out.paste(tested, (0, 0))
    out.paste(template, (SIDE + 6, 0))
    ImageDraw.Draw(out).text((2, SIDE + 4), f"{name} mousebite -> {said}", fill=(0, 0, 0))
    return out


def main() -> None:
    cells = [cell(*c) for c in CASES]
    w, h = cells[0].size
    sheet = Image.new("RGB", (2 * w + 12, 3 * h), (255, 255, 255))
    for i, c in enumerate(cells):
        sheet.paste(c, ((i % 2) * (w + 12), (i // 2) * h))
    sheet.resize((sheet.width * 3 // 2, sheet.height * 3 // 2), Image.NEAREST).save(
        "docs/img/lgo-typed-misses.png", optimize=True
    )


if __name__ == "__main__":
    main()
