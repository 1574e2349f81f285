import torch

from pcbsiam.config import ModelConfig
from pcbsiam.models import create_model
from pcbsiam.train.loops import train_step
from pcbsiam.train.losses import PairLoss


def test_train_step_in_cpu_bfloat16_updates_float32_weights() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(mode="stack", backbone="resnet18", scales=[3, 4], hidden_dim=16, band=2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batch = (torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))
    seen = []
    model.head.fc1.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    before = model.head.fc1.weight.detach().clone()
    stats = train_step(model, PairLoss(), optimizer, batch, torch.device("cpu"), cpu_amp=True)
    assert seen == [torch.bfloat16]  # the forward pass ran in bfloat16 autocast
    assert model.head.fc1.weight.dtype == torch.float32 and not torch.equal(model.head.fc1.weight, before)
    assert stats.items == 4 and torch.isfinite(torch.tensor(stats.loss))
    train_step(model, PairLoss(), optimizer, batch, torch.device("cpu"))
    assert seen == [torch.bfloat16, torch.float32]  # without cpu_amp the CPU step stays float32
