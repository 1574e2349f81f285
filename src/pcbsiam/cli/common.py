"""What several command groups share: parent parsers of their common options, and small helpers.

A parent parser is passed to ``sub.add_parser(..., parents=[...])``; each factory returns a fresh one,
so that one group's help texts or ``required`` never leak into another's. Nothing here imports
torch or the library, so building the whole ``pcbsiam`` parser stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pcbsiam.config import VIEW_COUNTS
from pcbsiam.errors import ConfigError
from pcbsiam.progress import quiet, set_quiet  # noqa: F401 - the commands set and read the switch here

if TYPE_CHECKING:
    from tqdm import tqdm

DATA_HELP = "DeepPCB root (holding PCBData/) or paper layout root"
SPLIT_HELP = "split file (DeepPCB layout)"
DEVICE_HELP = "cpu, cuda, cuda:1 ..."


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default, where it has one the help does not already state."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
            or isinstance(action, argparse._StoreConstAction | argparse._AppendConstAction)
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"

    def _split_lines(self, text: str, width: int) -> list[str]:
        """Lines of at most ``width`` characters, never broken inside a hyphenated name (cpu-stack-band,
        --max-shift), so that a name in a help reads, and is found, whole."""
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors read like every other error of the command: one line
    ``pcbsiam: error: ...`` on stderr and exit status 2 (sub-parsers are made of the same class), and whose
    help states the defaults (:class:`DefaultsHelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print the one-line error, pointing at ``--help``, and exit with status 2."""
        self.exit(2, f"pcbsiam: error: {' '.join(message.split())} (see {self.prog} --help)\n")

    def add_subparsers(self, **kwargs: Any) -> argparse._SubParsersAction:
        """Sub-commands, each of which also takes ``-v/--verbose`` and ``-q/--quiet`` (:class:`SubCommands`)."""
        kwargs.setdefault("action", SubCommands)
        return super().add_subparsers(**kwargs)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def verbosity_options(top: bool = False) -> argparse.ArgumentParser:
    """``-v/--verbose`` and ``-q/--quiet``.

    Args:
        top: the top-level parser's pair, whose default is False. A sub-command's pair has no default
            (``argparse.SUPPRESS``), so that ``pcbsiam -q inspect ...`` keeps the top level's value where
            the sub-command's parser, which parses its own arguments afterwards, was not given the flag.
    """
    p = _parent()
    default = False if top else argparse.SUPPRESS
    p.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    p.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="warnings and errors only; no progress output"
    )
    return p


class SubCommands(argparse._SubParsersAction):
    """The sub-commands of a :class:`Parser`: each one's parser also takes :func:`verbosity_options`, so
    ``-v`` and ``-q`` work before and after the sub-command's name, at any depth (``pcbsiam bench train -q``)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add sub-command ``name`` (``kwargs`` as for ``argparse``), with ``-v`` and ``-q``."""
        kwargs["parents"] = [*kwargs.get("parents", ()), verbosity_options()]
        return super().add_parser(name, **kwargs)


class _Names:
    """Names read from a registry when a help text is rendered (``str()``), not when the parser is built."""

    def __init__(self, names: Callable[[], Iterable[str]]) -> None:
        self._names = names

    def __str__(self) -> str:
        return ", ".join(self._names()) or "none"


class StoreNamed(argparse.Action):
    """Store the option's value, as argparse's default action does; its help may say ``%(names)s``: the names
    ``names()`` returns (presets, modes), looked up only when the help is rendered, so the help follows the
    registry and a registry behind a heavy import (torch) costs nothing to the other commands.

    Use: ``p.add_argument("--modes", action=StoreNamed, names=list_modes, help="one of %(names)s")``.
    """

    def __init__(
        self, option_strings: Sequence[str], dest: str, names: Callable[[], Iterable[str]], **kwargs: Any
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.names = _Names(names)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)


def show_progress() -> bool:
    """Whether progress reporters write: not :func:`quiet` and stderr is a terminal (not a log file or a pipe)."""
    return not quiet() and sys.stderr.isatty()


def _output(text: str, folder: bool) -> str:
    """``text`` if a folder (``folder``) or file can be written there: it is not of the other kind,
    and its nearest existing parent is a folder."""
    path = Path(text)
    want, other = ("folder", "file") if folder else ("file", "folder")
    if path.exists() and path.is_dir() != folder:
        raise argparse.ArgumentTypeError(f"{text} is a {other}; give a {want}")
    parent = next((p for p in path.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text} lies inside {parent}, which is a file")
    return text


def out_folder(text: str) -> str:
    """argparse type of an output folder: absent or a folder, never a file (or inside one)."""
    return _output(text, folder=True)


def detector_engine_option(parser: argparse.ArgumentParser) -> None:
    """``--detector-engine FILE``: what runs the verifier of ``--detector PATH`` (torch, or its ONNX graph)."""
    parser.add_argument(
        "--detector-engine",
        default="torch",
        metavar="{torch,FILE.onnx}",
        help="run the learned detector's verifier with PyTorch, or with ONNX Runtime on a graph exported from it "
        "by `pcbsiam export-detector` (fp32 or int8; about 2x faster with int8)",
    )


def flag_detections_option(parser: argparse.ArgumentParser) -> None:
    """``--flag-detections C``: tiles holding half of a detection's box at confidence C or more are defective."""
    parser.add_argument(
        "--flag-detections",
        type=bounded(float, 0.0, 1.0),
        default=None,
        metavar="C",
        help="with --detector: a tile holding at least half of the box of a detection with confidence C or more "
        "is defective too, and so is the board (0.99 met every target on DeepPCB's held-out designs, "
        "docs/RESULTS.md; default: the tiles' scores alone decide)",
    )


def file_mb(path: str | Path) -> float:
    """A file's size in MiB, to a tenth."""
    return round(Path(path).stat().st_size / 2**20, 1)


def out_file(text: str) -> str:
    """argparse type of an output file: absent or a file, never a folder (or inside a file)."""
    return _output(text, folder=False)


def out_folder_or(suffix: str) -> Callable[[str], str]:
    """argparse type of ``--out`` where it once named a file: a folder, or (still accepted, see
    :func:`single_output`) a file ending in ``suffix``."""

    def check(text: str) -> str:
        return _output(text, folder=not text.endswith(suffix))

    return check


def single_output(file: str | None, out: str | None, name: str, option: str) -> Path | None:
    """Where a command that writes one file writes it: ``--<option> FILE``, else ``--out DIR``/``name``; None
    when neither is given. ``--out`` naming a file with ``name``'s suffix (its meaning before ``--out`` was a
    folder everywhere) still works, with a warning.

    Raises:
        ConfigError: both are given.
    """
    if file and out:
        raise ConfigError(f"give --{option} FILE or --out DIR, not both")
    if file:
        return Path(file)
    if not out:
        return None
    if out.endswith(Path(name).suffix):
        import logging

        logging.getLogger("pcbsiam").warning("--out %s: --out is a folder now; name the file with --%s", out, option)
        return Path(out)
    return Path(out) / name


def bounded(kind: type, low: float, high: float, high_open: bool = False, low_open: bool = False) -> Any:
    """argparse type: a ``kind`` (int or float) in [low, high] (``high_open``: up to high, not it; ``low_open``:
    above low, not it)."""
    span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} in {span}, got {text!r}") from None
        if not ((low < value if low_open else low <= value) and (value < high if high_open else value <= high)):
            raise argparse.ArgumentTypeError(f"must be in {span}, got {text}")
        return value

    return parse


def device_name(text: str) -> str:
    """argparse type of ``--device``: a device torch knows and this machine has (``auto`` resolved)."""
    if text == "cpu":  # the default: no torch import while parsing
        return text
    from pcbsiam.devices import pick_device

    try:
        return str(pick_device(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def data_options(
    required: bool = True,
    data_help: str = DATA_HELP,
    split_help: str = SPLIT_HELP,
    cache_dir: bool = True,
) -> argparse.ArgumentParser:
    """``--data`` / ``--split`` (default ``trainval.txt``) / ``--cache-dir``: where the boards come from."""
    p = _parent()
    p.add_argument("--data", required=required, help=data_help)
    p.add_argument("--split", default="trainval.txt", help=split_help)
    if cache_dir:
        p.add_argument("--cache-dir", default=None, help="memory-map decoded boards from here")
    return p


def onnx_export_options(data_help: str, split_help: str) -> argparse.ArgumentParser:
    """What an ONNX export command takes besides ``--model``: ``--data`` / ``--split`` (what calibrates the int8
    graph), ``--onnx FILE``, ``--opset``, ``--int8`` and ``--int8-out``."""
    p = data_options(required=False, data_help=data_help, split_help=split_help, cache_dir=False)
    p.add_argument("--onnx", required=True, type=out_file, help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--int8", action="store_true", help="also write a static int8 (QDQ, per-channel) graph")
    p.add_argument("--int8-out", default=None, type=out_file, help="int8 file (default: ONNX name with -int8)")
    return p


def device_option(help: str = DEVICE_HELP) -> argparse.ArgumentParser:
    """``--device`` (default ``cpu``)."""
    p = _parent()
    p.add_argument("--device", default="cpu", type=device_name, help=help)
    return p


def model_option(help: str, required: bool = True, repeat: bool = False, ready: bool = True) -> argparse.ArgumentParser:
    """``--model``: a bundle, run folder or checkpoint (``repeat``: a list, one per ``--model``); with ``ready``
    the help names the ready models shipped in the package (``--model deeppcb``)."""
    from pcbsiam.ready import READY_MODELS

    if ready:
        help = f"{help}, or a ready model: {', '.join(READY_MODELS)}"
    p = _parent()
    if repeat:
        p.add_argument("--model", required=required, action="append", help=help)
    else:
        p.add_argument("--model", required=required, default=None, help=help)
    return p


def config_options(set_help: str, data_root: bool = False) -> argparse.ArgumentParser:
    """``--set KEY=VALUE`` config overrides (repeatable) and, with ``data_root``, ``--data`` for ``data.root``."""
    p = _parent()
    if data_root:
        p.add_argument("--data", default=None, help="data root (overrides data.root)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help=set_help)
    return p


def json_option(help: str | None = None) -> argparse.ArgumentParser:
    """``--json FILE``: also write the command's figures there."""
    p = _parent()
    p.add_argument("--json", default=None, type=out_file, help=help)
    return p


def parse_csv(text: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_csv_ints(text: str, what: str = "batch sizes", example: str = "1,32") -> list[int]:
    """Positive integers of a comma-separated option value; a sentence otherwise."""
    try:
        values = [int(t) for t in parse_csv(text)]
    except ValueError as exc:
        raise ConfigError(f"{what} must be comma-separated integers, e.g. {example}; got {text!r}") from exc
    if not values or min(values) < 1:
        raise ConfigError(f"{what} must be positive integers, got {text!r}")
    return values


def report_skipped(skipped: list) -> None:
    """List the items a command passed over on stderr."""
    if skipped:
        print(f"skipped {len(skipped)} item(s):", file=sys.stderr)
        for err in skipped:
            print(f"  {err}", file=sys.stderr)


def progress(done: int, total: int, every: int, unit: str = "boards") -> None:
    """``  done/total boards`` on stderr every ``every`` items and at the end, when :func:`show_progress`."""
    if show_progress() and (done == total or done % max(1, every) == 0):
        print(f"  {done}/{total} {unit}", file=sys.stderr)


def progress_bar(total: int, desc: str, unit: str = "board") -> tqdm:
    """A tqdm bar on stderr that stays when done, silent with ``-q`` (:func:`quiet`) and when stderr is not a
    terminal (:func:`pcbsiam.progress.bar`)."""
    from pcbsiam.progress import bar

    return bar(total, desc, unit, leave=True)


def write_json_if(path: str | Path | None, obj: Any, announce: bool = False) -> None:
    """Write ``obj`` as JSON to ``path`` when one is given (``announce``: say so on stderr)."""
    if path:
        from pcbsiam.io import write_json

        write_json(path, obj)
        if announce:
            print(f"wrote {path}", file=sys.stderr)


def inference_options() -> argparse.ArgumentParser:
    """How the network is applied (default: the bundle's): ``--gate N``, the tile gate (``model.gate``), and
    ``--views K``, test-time views (``model.views``)."""
    p = _parent()
    p.add_argument(
        "--gate",
        type=bounded(int, -1, 10**9),
        default=None,
        metavar="N",
        help="skip the network on tiles whose tolerance-band map has at most N pixels within the tile and "
        "model.gate_margin px around it (0: only empty maps; -1: score every tile; default: the model's model.gate)",
    )
    p.add_argument(
        "--views",
        type=int,
        choices=VIEW_COUNTS,
        default=None,
        help="average the network's score over this many flips and quarter turns of each tile (costs as many "
        "passes; stack mode; default: the model's model.views)",
    )
    return p


#: ``--pipeline`` values; the same as :data:`pcbsiam.deploy.inspector.PIPELINE_CHOICES` (that module imports torch).
PIPELINE_CHOICES = ("auto", "on", "off")
PIPELINE_HELP = (
    "on: decode, register and crop the next board in a second thread while the network scores this one, the "
    "network on one thread fewer; off: one stage after the other; auto: on for an int8 engine only (measured "
    "faster there, slower for fp32 networks)"
)


def engine_options(pipeline: bool = True) -> argparse.ArgumentParser:
    """``--engine`` (the bundle's PyTorch network or an exported ONNX graph), ``--threads`` and, for batches,
    ``--pipeline``."""
    p = _parent()
    p.add_argument(
        "--engine",
        default="torch",
        metavar="{torch,FILE.onnx}",
        help="run the network with PyTorch, or with ONNX Runtime on a graph exported from this bundle by "
        "`pcbsiam export` (fp32 or int8)",
    )
    p.add_argument(
        "--threads", type=bounded(int, 1, 1024), default=None, help="CPU threads (default: torch's, one per core)"
    )
    if pipeline:
        p.add_argument("--pipeline", choices=PIPELINE_CHOICES, default="auto", help=PIPELINE_HELP)
    return p


def inference_of(args: argparse.Namespace) -> dict[str, Any]:
    """The inference settings given on the command line (``--gate``, ``--views``), for
    ``load_bundle(..., inference=)``."""
    return {"model.gate": getattr(args, "gate", None), "model.views": getattr(args, "views", None)}


def tiling_options() -> argparse.ArgumentParser:
    """``--overlap`` and ``--max-shift`` of a whole-board inspection (``inspect``, ``serve``)."""
    p = _parent()
    p.add_argument(
        "--overlap",
        type=bounded(float, 0.0, 1.0, high_open=True),
        default=0.0,
        help="share of a tile overlapping its neighbour, in [0, 1)",
    )
    p.add_argument("--max-shift", type=int, default=16, help="largest registration offset accepted (px)")
    return p
