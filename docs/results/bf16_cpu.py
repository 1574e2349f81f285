"""bf16 on the CPU (issue 14): PyTorch's CPU autocast (oneDNN; this processor has AVX512-BF16 and AMX) against
fp32, for inference of whole-board tiles and for training steps, and the scores' agreement.

Run from the repository root on an idle machine:
    python docs/results/bf16_cpu.py --model runs/after/fold00041-gate.bundle --data ../shared/datasets/DeepPCB
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pcbsiam.deploy.bundle import load_bundle
from pcbsiam.deploy.export import data_patches


def _rate(fn, items: int, seconds: float = 4.0) -> float:  # noqa: ANN001
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * items / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--patches", type=int, default=512)
    a = p.parse_args()
    bundle = load_bundle(a.model)
    model = bundle.model.eval()
    tested, reference = (torch.from_numpy(x) for x in data_patches(bundle, a.data, n=a.patches, seed=3))
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    out: dict = {"cpu_flags": sorted({f for f in cpuinfo.split() if "bf16" in f or "amx" in f})}

    @torch.inference_mode()
    def scores(t: torch.Tensor, r: torch.Tensor, bf16: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.score_pairs(t, r).float()

    full = scores(tested, reference, False)
    half = scores(tested, reference, True)
    thr = float(bundle.threshold)
    out["agreement"] = {
        "patches": len(tested),
        "max_abs_score_diff": round(float((full - half).abs().max()), 4),
        "verdicts_equal": float(((full > thr) == (half > thr)).float().mean()),
    }
    for threads in (2, 1):
        torch.set_num_threads(threads)
        for batch in (8, 32):
            t, r = tested[:batch], reference[:batch]
            out[f"infer_threads{threads}_batch{batch}"] = {
                name: round(_rate(lambda bf=bf, t=t, r=r: scores(t, r, bf), batch), 1)
                for name, bf in (("fp32_patches_per_s", False), ("bf16_patches_per_s", True))
            }
    torch.set_num_threads(2)
    net = bundle.model.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    labels = (torch.arange(16) % 2).float()

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net.score_pairs(tested[:16], reference[:16]).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out["train_threads2_batch16"] = {
        name: round(_rate(lambda bf=bf: step(bf), 16, 8.0), 2)
        for name, bf in (("fp32_items_per_s", False), ("bf16_items_per_s", True))
    }
    out["torch"] = torch.__version__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
