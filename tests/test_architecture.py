"""The package layout's rules: imports point one way, no cycles, no mode names tested outside the registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pcbsiam"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """pcbsiam modules imported when ``path`` is imported (module level, not inside functions)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue  # imports for type checkers only
        for sub in ast.walk(node) if isinstance(node, ast.If | ast.Try) else [node]:
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("pcbsiam"):
                out.add(sub.module)
                out.update(f"{sub.module}.{a.name}" for a in sub.names)
            elif isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names if a.name.startswith("pcbsiam"))
    return out


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}
GRAPH = {m: {i for i in top_level_imports(p) if i in MODULES and i != m} for m, p in MODULES.items()}


def test_no_import_cycles() -> None:
    # a package's __init__ importing its own modules is not a cycle of the modules themselves
    graph = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in GRAPH.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for n in graph[m]:
            if state.get(n) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*stack[stack.index(n) :], n])}")
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("package", ["deploy", "evaluation", "serve", "models", "data", "viz", "detection"])
def test_inference_side_never_imports_training(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # function-level imports too: nothing here may need train/
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            bad = [n for n in names if n.startswith(("pcbsiam.train", "pcbsiam.experiment", "pcbsiam.cli"))]
            assert not bad, f"{path.relative_to(SRC)} imports {bad}"


def test_the_service_loads_no_training_module() -> None:
    code = (
        "import sys, pcbsiam.serve.app, pcbsiam.deploy.backends; "
        "bad = sorted(m for m in sys.modules if m.startswith(('pcbsiam.train', 'torch.distributed.run', "
        "'pytorch_metric_learning'))); print(bad); assert not bad"
    )
    pytest.importorskip("fastapi")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_no_mode_name_is_tested_outside_the_models() -> None:
    from pcbsiam.models import list_modes

    modes = set(list_modes())
    for path in SRC.rglob("*.py"):
        if path.parent.name == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                consts = {c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)}
                assert not consts & modes, f"{path.relative_to(SRC)}:{node.lineno} tests a mode name"


def test_packages_name_their_parts() -> None:
    flat = sorted(p.stem for p in SRC.glob("*.py") if p.stem != "__init__")
    assert flat == ["checkpoint", "config", "demo", "devices", "errors", "io", "progress"], flat


def test_detection_stands_below_evaluation_and_deploy() -> None:
    # the detectors use data and models only, so the inspector, the service and the protocol can use them
    for m, deps in GRAPH.items():
        if m.startswith("pcbsiam.detection"):
            bad = sorted(d for d in deps if d.startswith(("pcbsiam.evaluation", "pcbsiam.deploy", "pcbsiam.serve")))
            assert not bad, f"{m} imports {bad}"
