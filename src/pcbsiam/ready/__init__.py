"""Ready models shipped inside the package, their cards, and the example board pairs that come with them.

A ready model is a calibrated bundle stored in this folder as ``<name>.bundle`` (weights in float16, loaded as
float32) beside its card ``<name>.md``. Wherever a calibrated model is loaded (``load_bundle``: inspect,
evaluate, calibrate, export, bench, serve, info), the name (``--model deeppcb``) stands for the file; a file or
training run folder of that name wins over it. ``examples/`` holds a few DeepPCB board
pairs in DeepPCB's layout (``examples/PCBData/examples.txt``) that the ready model did not train on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pcbsiam.data.records import BoardPair

HERE = Path(__file__).resolve().parent

#: Ready model name -> what it is, for help texts and errors.
READY_MODELS = {
    "deeppcb": "cpu-stack-band trained on DeepPCB trainval (less the example pairs)",
}


def ready_path(name: str) -> Path:
    """The bundle file of ready model ``name`` (KeyError for an unknown name)."""
    if name not in READY_MODELS:
        raise KeyError(name)
    return HERE / f"{name}.bundle"


def card_path(name: str) -> Path:
    """The model card (Markdown) of ready model ``name``."""
    return ready_path(name).with_suffix(".md")


def resolve_model(model: str | Path) -> Path:
    """``model`` as a path: an existing file or training run folder as it is, a ready model's name as its
    bundle file, anything else unchanged (the caller's not-found sentence names the ready models).

    Only a run folder (``config.yaml`` or ``checkpoints/`` inside) shadows a name: on file systems that ignore
    case a data folder ``DeepPCB/`` exists as ``deeppcb`` too.
    """
    path = Path(model)
    if str(model) not in READY_MODELS:
        return path
    is_run = path.is_dir() and ((path / "config.yaml").is_file() or (path / "checkpoints").is_dir())
    return path if path.is_file() or is_run else ready_path(str(model))


def ready_name(path: str | Path) -> str | None:
    """The ready model a path is (its name), or None."""
    p = Path(path).resolve()
    return next((n for n in READY_MODELS if ready_path(n) == p), None)


def examples_root() -> Path:
    """The example pairs' data root (DeepPCB layout); their split file is ``examples.txt``."""
    return HERE / "examples"


def example_pairs() -> list[BoardPair]:
    """The example pairs (name, tested image, template, defect boxes), in ``examples.txt`` order."""
    from pcbsiam.data.deeppcb import read_deeppcb

    return read_deeppcb(examples_root(), "examples.txt").pairs
