import logging

import pytest
import torch

from pcbsiam import devices
from pcbsiam.devices import autocast, warn_cpu_amp


def test_autocast_is_bfloat16_on_cuda_and_on_the_cpu_only_when_asked() -> None:
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    cpu = torch.device("cpu")
    with autocast(cpu):
        assert (a @ b).dtype == torch.float32  # the default leaves the CPU in float32
    with autocast(cpu, cpu=True):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(cpu, enabled=False, cpu=True):
        assert (a @ b).dtype == torch.float32


def test_cpu_amp_on_a_processor_without_native_bfloat16_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="pcbsiam.devices"):
        assert warn_cpu_amp(cpu, cpu_amp=True)
    assert "train.cpu_amp=false" in caplog.text
    assert not warn_cpu_amp(cpu, cpu_amp=False)
    assert not warn_cpu_amp(torch.device("cuda"), cpu_amp=True)  # autocast on CUDA is train.amp's
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert not warn_cpu_amp(cpu, cpu_amp=True)
