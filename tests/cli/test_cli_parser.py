"""The ``pcbsiam`` parser: one module per command group, shared options, error handling, the data commands."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pcbsiam.cli import bench, common, deploy
from pcbsiam.cli import data as data_cli
from pcbsiam.cli.main import COMMAND_GROUPS, build_parser, main
from pcbsiam.config import PRESET_DIR
from pcbsiam.errors import ConfigError, DataError

COMMANDS = [
    "data",
    "train",
    "demo",
    "calibrate",
    "evaluate",
    "baseline",
    "inspect",
    "detect",
    "evaluate-detections",
    "train-detector",
    "export-detector",
    "experiment",
    "cv",
    "cv-detector",
    "export",
    "info",
    "bench",
    "serve",
    "serve-loadtest",
]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_parser_has_every_command_in_order() -> None:
    assert list(_subparsers(build_parser())) == COMMANDS
    assert all(callable(group.register) for group in COMMAND_GROUPS)
    assert list(_subparsers(_subparsers(build_parser())["data"])) == ["synth", "stats", "show", "bench"]
    assert list(_subparsers(_subparsers(build_parser())["bench"])) == ["infer", "inspect", "train"]


def test_cli_help_imports_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, contextlib, io\n"
        "from pcbsiam.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "argv",
    [
        ["data", "stats", "--data", "D"],
        ["data", "show", "--data", "D", "--out", "x.png"],
        ["data", "bench", "--data", "D"],
        ["calibrate", "--model", "m", "--data", "D"],
        ["evaluate", "--model", "m", "--data", "D"],
        ["baseline", "--data", "D"],
    ],
)
def test_parser_shared_data_options(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.split == "trainval.txt" and getattr(args, "cache_dir", None) is None  # data show has none
    assert args.data == ("D" if "--data" in argv else None)


def test_parser_data_is_required_where_it_was() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "stats"])
    # calibrate takes --data or --from-cv: the command says which is missing (tests/experiment/test_out_of_group.py)
    assert build_parser().parse_args(["calibrate", "--model", "m", "--from-cv", "cv"]).data is None


def test_parser_export_graph_with_hidden_mode_alias() -> None:
    p = build_parser()
    base = ["export", "--model", "m", "--onnx", "x.onnx"]
    assert p.parse_args(base).graph == "patches"
    assert p.parse_args([*base, "--graph", "embeddings"]).graph == "embeddings"
    assert p.parse_args([*base, "--mode", "embeddings"]).graph == "embeddings"
    assert not hasattr(p.parse_args(base), "mode")
    with pytest.raises(SystemExit):
        p.parse_args([*base, "--graph", "pairs"])
    text = _subparsers(p)["export"].format_help()
    assert "--graph" in text and not re.search(r"--mode\b", text) and "--cache-dir" not in text
    assert p.parse_args(base).func is deploy.cmd_export


def test_parser_train_config_help_lists_shipped_presets() -> None:
    text = " ".join(_subparsers(build_parser())["train"].format_help().split())
    presets = sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))
    assert presets and all(name in text for name in presets)


def test_parser_bench_commands() -> None:
    p = build_parser()
    t = p.parse_args(["bench", "train"])
    assert t.func is bench.cmd_bench_train and t.modes == "paper" and t.json is None
    i = p.parse_args(["bench", "infer"])
    assert i.func is bench.cmd_bench_infer and i.model is None and i.engines == "torch,onnx-fp32,onnx-int8"


def test_parser_overrides_and_model_options() -> None:
    p = build_parser()
    args = p.parse_args(["train", "--config", "tiny", "--out", "r", "--set", "a.b=1", "--set", "c.d=2"])
    assert args.set == ["a.b=1", "c.d=2"] and args.data is None
    assert p.parse_args(["demo"]).set is None
    assert p.parse_args(["experiment", "--out", "e", "--data", "D"]).data == "D"
    assert p.parse_args(["evaluate", "--model", "a", "--model", "b", "--data", "D"]).model == ["a", "b"]
    serve = p.parse_args(["serve", "--model", "m"])
    assert serve.overlap == 0.0 and serve.max_shift == 16 and serve.device == "cpu"


def test_cli_errors_exit_2_and_interrupts_130(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise DataError(Path(args.out), "no boards here")

    monkeypatch.setattr(data_cli, "cmd_data_synth", fail)
    assert main(["data", "synth", "--out", "x"]) == 2
    assert capsys.readouterr().err.startswith("pcbsiam: error: ")

    def interrupt(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(data_cli, "cmd_data_synth", interrupt)
    assert main(["data", "synth", "--out", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_cli_common_csv_helpers() -> None:
    assert common.parse_csv(" a, b,,c ") == ["a", "b", "c"]
    assert common.parse_csv_ints("1, 32") == [1, 32]
    for bad in ("1,x", "0", ""):
        with pytest.raises(ConfigError):
            common.parse_csv_ints(bad)


def test_cli_data_synth_and_stats(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress lines go to a terminal only
    root = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(root), "--boards", "4", "--size", "128", "--groups", "2"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["boards"] == 4 and "4/4 boards" in out.err
    assert main(["data", "stats", "--data", str(root), "--patch", "64", "--compact"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["boards"] == 4 and stats["skipped"] == 0


def test_cli_data_bench_uses_the_training_loader(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(["data", "bench", "--data", str(synth_root), "--size", "32", "--batch-size", "4", "--seconds", "0"]) == 0
    )
    rep = json.loads(capsys.readouterr().out)
    assert rep["boards"] == 24 and rep["batch_size"] == 4 and rep["patches_per_s"] > 0


def _all_parsers(parser: argparse.ArgumentParser, name: str = "pcbsiam") -> dict[str, argparse.ArgumentParser]:
    out = {name: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                out.update(_all_parsers(sub, f"{name} {sub_name}"))
    return out


def test_every_help_renders_and_states_the_defaults() -> None:
    from pcbsiam.cli.main import build_parser

    parsers = _all_parsers(build_parser())
    assert "pcbsiam bench inspect" in parsers and "pcbsiam train-detector" in parsers
    for name, parser in parsers.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            stated = action.default not in (None, False, argparse.SUPPRESS)
            if action.option_strings and stated and isinstance(action.default, bool | int | float | str):
                assert "default" in (action.help or "") or f"(default: {action.default})" in text, (
                    f"{name} {action.option_strings[0]} does not state its default {action.default!r}"
                )
