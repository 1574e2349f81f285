"""Every command works for every mode: a tiny bundle of each registered mode (and the stack mode with
its band channel) goes through export (fp32 with parity, int8), bench infer, evaluate with the ONNX
engines, inspect, and the service."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

from pcbsiam.cli.main import main  # noqa: E402
from pcbsiam.deploy.bundle import load_bundle  # noqa: E402
from pcbsiam.models import list_modes, mode_class  # noqa: E402
from tests.conftest import board, make_tiny_bundle  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VARIANTS = {mode: [f"model.mode={mode}"] for mode in list_modes()} | {
    "stack+band": ["model.mode=stack", "model.band=2"]
}


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def mode_bundle(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A tiny calibrated bundle of one mode (64 px tiles, 32 px input) with a registered 192 px board."""
    return make_tiny_bundle(
        tmp_path / f"{request.param}.bundle",
        threshold=0.0,
        overrides=VARIANTS[request.param],
        boards={"demo": board(1, 192)},
    )


def test_every_command_runs_on_every_mode(
    mode_bundle: Path, tiny_deeppcb: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bundle = load_bundle(mode_bundle)
    model = bundle.model
    assert type(model) is mode_class(bundle.cfg.model.mode)

    # export: fp32 with parity, int8 calibrated on data pairs
    onnx_path = tmp_path / "m.onnx"
    argv = ["export", "--model", str(mode_bundle), "--onnx", str(onnx_path), "--int8", "--data", str(tiny_deeppcb)]
    assert main([*argv, "--calib-patches", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model_mode"] == bundle.cfg.model.mode and onnx_path.is_file()
    assert 0.0 <= report["int8"]["check"]["verdict_agreement"] <= 1.0

    # bench infer: every engine times the tile work of this mode
    rows_path = tmp_path / "bench.json"
    bench = ["bench", "infer", "--model", str(mode_bundle), "--engines", "torch,onnx-fp32", "--batch-sizes", "2"]
    assert main([*bench, "--seconds", "0.05", "--peak-seconds", "0.05", "--json", str(rows_path)]) == 0
    rows = json.loads(rows_path.read_text())
    assert [r["engine"] for r in rows] == ["torch", "onnx-fp32"] and all(r["patches_per_s"] > 0 for r in rows)
    capsys.readouterr()

    # evaluate through the ONNX engines: the same scores as PyTorch
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--model", str(mode_bundle), "--data", str(tiny_deeppcb), "--subset", "all"]
    assert main([*evaluate, "--engines", "onnx-fp32", "--out", str(out), "--json", str(tmp_path / "e.json")]) == 0
    reports = json.loads((tmp_path / "e.json").read_text())["models"]
    torch_rep, onnx_rep = (reports[k] for k in sorted(reports, key=len))
    assert onnx_rep["engine"] == "onnx-fp32" and onnx_rep["auroc"] == pytest.approx(torch_rep["auroc"], abs=1e-6)
    capsys.readouterr()
    # int8 is calibrated on training pairs of the data (the run's training items)
    assert main([*evaluate, "--engines", "onnx-int8", "--json", str(tmp_path / "q.json")]) == 0
    assert any(r.get("engine") == "onnx-int8" for r in json.loads((tmp_path / "q.json").read_text())["models"].values())
    capsys.readouterr()

    # inspect: the report and the overlay name the model's score
    tested, template = tmp_path / "t.png", tmp_path / "r.png"
    img = board(1, 192)
    Image.fromarray(img).save(template)
    bad = img.copy()
    bad[70:86, 70:86] = 255 - bad[70:86, 70:86]
    Image.fromarray(bad).save(tested)
    insp = tmp_path / "insp"
    assert (
        main(
            [
                "inspect",
                "--model",
                str(mode_bundle),
                "--test",
                str(tested),
                "--template",
                str(template),
                "--out",
                str(insp),
            ]
        )
        == 0
    )
    rep = json.loads((insp / "report.json").read_text())
    assert rep["score_name"] == model.score_label and len(rep["tiles"]) == 9
    assert {"score", "defective"} <= set(rep["tiles"][0]) and "distance" not in rep["tiles"][0]
    assert (insp / "overlay.png").is_file()
    capsys.readouterr()

    # the service: inspect against the registered board, list, redraw the overlay
    from fastapi.testclient import TestClient

    from pcbsiam.serve.app import create_app

    app = create_app(mode_bundle, f"sqlite:///{tmp_path / 'db.sqlite'}")
    with TestClient(app, base_url="http://localhost") as client:
        buf = tested.read_bytes()
        res = client.post("/v1/inspect", files={"tested": ("t.png", buf, "image/png")}, data={"board": "demo"})
        assert res.status_code == 201, res.text
        body = res.json()
        assert body["score_name"] == model.score_label and np.isfinite(body["max_score"])
        assert client.get(f"/v1/inspections/{body['id']}/overlay.png").status_code == 200
