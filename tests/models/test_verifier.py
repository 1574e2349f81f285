import pytest
import torch

from pcbsiam.models.detector import CandidateNet, VerifierConfig


def test_verdicts_have_the_documented_shapes_and_read_the_rule_types_only_when_told() -> None:
    torch.manual_seed(0)
    t, r = torch.randn(3, 1, 32, 32), torch.randn(3, 1, 32, 32)
    hints = torch.tensor([0, 2, 5])
    plain = CandidateNet(VerifierConfig(input_size=32, hidden_dim=16)).eval()
    out = plain(t, r)
    assert out.logits.shape == (3, 7) and out.deltas.shape == (3, 4)
    assert torch.equal(plain(t, r, hints).logits, out.logits)  # ignored without rule_types
    hinted = CandidateNet(VerifierConfig(input_size=32, hidden_dim=16, rule_types=True)).eval()
    assert hinted.hidden.in_features == plain.hidden.in_features + 7
    a, b = hinted(t, r, hints), hinted(t, r, torch.tensor([1, 2, 5]))
    assert not torch.allclose(a.logits[0], b.logits[0]) and torch.equal(a.logits[1:], b.logits[1:])
    with pytest.raises(ValueError, match="give rule_types"):
        hinted(t, r)
