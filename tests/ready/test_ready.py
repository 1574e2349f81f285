import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.errors import PcbsiamError
from pcbsiam.ready import (
    READY_MODELS,
    card_path,
    example_pairs,
    examples_root,
    ready_name,
    ready_path,
    resolve_model,
)
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]


def test_a_ready_name_resolves_to_its_packaged_file_and_an_existing_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_model("deeppcb") == ready_path("deeppcb")
    assert ready_name(resolve_model("deeppcb")) == "deeppcb"
    assert resolve_model("nosuch.bundle") == Path("nosuch.bundle")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deeppcb").write_bytes(b"")  # a file of that name here is what the user means
    assert resolve_model("deeppcb") == Path("deeppcb") and ready_name("deeppcb") is None
    with pytest.raises(KeyError):
        ready_path("nosuch")


def test_only_a_run_folder_shadows_a_ready_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deeppcb" / "PCBData").mkdir(parents=True)  # a data folder (DeepPCB/ on a case-blind disk)
    assert resolve_model("deeppcb") == ready_path("deeppcb")
    (tmp_path / "deeppcb" / "config.yaml").write_text("model: {}\n")  # now a training run of that name
    assert resolve_model("deeppcb") == Path("deeppcb")


def test_an_unknown_model_names_the_ready_models() -> None:
    with pytest.raises(PcbsiamError, match="or a ready model \\(deeppcb\\)"):
        load_bundle("nosuch.bundle")


def test_every_ready_model_ships_small_with_its_card() -> None:
    for name in READY_MODELS:
        assert ready_path(name).is_file() and ready_path(name).stat().st_size <= 25 * 2**20
        card = card_path(name).read_text()
        for part in ("cross-validation", "validation", "pcbsiam train", "not for"):
            assert part in card.lower(), part


def test_the_examples_are_deeppcb_pairs_one_per_group_left_out_of_the_ready_models_training() -> None:
    pairs = example_pairs()
    assert len(pairs) == 7 and len({p.name[:5] for p in pairs}) == 7
    assert all(p.tested.is_file() and p.template.is_file() and len(p.boxes) for p in pairs)
    assert (examples_root() / "LICENSE").read_text().startswith("MIT License")
    trained = (REPO / "docs" / "results" / "ready" / "train.txt").read_text()
    assert not any(f"/{p.name}.jpg" in trained for p in pairs)
    assert len(trained.splitlines()) == 993
    data = load_bundle("deeppcb").data
    assert data["items"] == 993 and data["layout"] == "deeppcb" and not data["synthetic"]


def test_inspect_with_the_ready_model_on_a_shipped_example(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pair = next(p for p in example_pairs() if p.name == "20085003")
    name, tested, template = pair.name, pair.tested, pair.template
    code, out, err = run_cli(
        capsys, "inspect", "--model", "deeppcb", "--tested", tested, "--template", template, "--out", tmp_path
    )
    assert code == 0, err
    assert json.loads(out)["verdict"] == "defective"  # every DeepPCB tested board has defects
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["annotation"].endswith(f"{name}.txt") and (tmp_path / "overlay.png").is_file()


def test_info_prints_the_card_of_a_ready_model(capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(capsys, "info", "deeppcb")
    assert code == 0 and "ready_model:" in out and "# The ready model `deeppcb`" in out
    code, out, _ = run_cli(capsys, "info", "deeppcb", "--json")
    assert json.loads(out)["ready_model"]["name"] == "deeppcb"


def test_calibrate_refuses_to_write_into_the_package(capsys: pytest.CaptureFixture) -> None:
    code, _, err = run_cli(capsys, "calibrate", "--model", "deeppcb", "--data", examples_root(), "--split", "x.txt")
    assert code == 2 and "give --bundle FILE (or --out DIR)" in err
    assert ready_path("deeppcb").is_file()


@pytest.mark.slow
def test_the_wheel_carries_the_ready_model_and_the_examples(tmp_path: Path) -> None:
    project = tmp_path / "project"  # a copy of what a build reads, so that nothing is written into the checkout
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(REPO / name, project / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, project],
        check=True,
        cwd=tmp_path,
    )
    names = zipfile.ZipFile(next(tmp_path.glob("pcbsiam-*.whl"))).namelist()
    for path in [ready_path("deeppcb"), card_path("deeppcb"), examples_root() / "LICENSE"]:
        assert f"pcbsiam/ready/{path.relative_to(ready_path('deeppcb').parent)}" in names
    shipped = [n for n in names if n.startswith("pcbsiam/ready/examples/PCBData/")]
    assert "pcbsiam/ready/examples/PCBData/examples.txt" in shipped and len(shipped) == 1 + 7 * 3


def test_the_service_serves_the_ready_model_by_name(tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from pcbsiam.serve.app import create_app

    pair = next(p for p in example_pairs() if p.name == "44000062")
    tested, template = pair.tested, pair.template
    app = create_app("deeppcb", db_url=f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(app, base_url="http://localhost") as client:
        files = {
            "tested": ("t.jpg", tested.read_bytes(), "image/jpeg"),
            "template": ("r.jpg", template.read_bytes(), "image/jpeg"),
        }
        res = client.post("/v1/inspect", files=files)
        assert res.status_code == 201, res.text
        assert res.json()["verdict"] == "defective"
        assert client.get("/healthz").status_code == 200
