import torch
import torch.nn.functional as F

from pcbsiam.train.losses import SiameseLoss, loss_triplets


def plain_triplet(emb: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean hinge over triplets, anchor compared with its same-class and other-class member."""
    total = []
    for i, (la, lp, _) in enumerate(labels.tolist()):
        a, p, n = emb[3 * i], emb[3 * i + 1], emb[3 * i + 2]
        same, other = (p, n) if la == lp else (n, p)
        total.append(torch.clamp((a - same).norm() - (a - other).norm() + margin, min=0))
    return torch.stack(total).mean()


def test_triplet_part_matches_plain_loop() -> None:
    torch.manual_seed(0)
    emb = F.normalize(torch.randn(12, 8), dim=1)
    labels = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]])
    groups = torch.zeros(4, 3, dtype=torch.long)
    loss = SiameseLoss("triplet", margin=0.3)(emb, torch.zeros(12, 2), labels, groups)
    assert torch.allclose(loss.total, plain_triplet(emb, labels, 0.3), atol=1e-6)
    assert set(loss.parts) == {"triplet"}  # only the parts the loss has


def test_hand_made_embeddings() -> None:
    # anchor equals its same-class member and is far from the other: zero loss
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    parts = SiameseLoss("triplet", margin=0.2)(
        emb, torch.zeros(3, 2), torch.tensor([[1, 1, 0]]), torch.zeros(1, 3).long()
    )
    assert float(parts.total) == 0.0
    # defect-free anchor equal to the defective positive: loss = 0 - sqrt(2) + 0.2 < 0 -> swapped roles give sqrt2+0.2
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    parts = SiameseLoss("triplet", margin=0.2)(
        emb, torch.zeros(3, 2), torch.tensor([[0, 1, 0]]), torch.zeros(1, 3).long()
    )
    assert abs(float(parts.total) - (2**0.5 + 0.2)) < 1e-5


def test_index_roles() -> None:
    a, p, n = loss_triplets(torch.tensor([[1, 1, 0], [0, 1, 0]]))
    assert a.tolist() == [0, 3] and p.tolist() == [1, 5] and n.tolist() == [2, 4]


def test_combined_weights_and_ce_on_anchors() -> None:
    torch.manual_seed(1)
    emb = F.normalize(torch.randn(6, 4), dim=1)
    logits = torch.randn(6, 3)
    labels = torch.tensor([[1, 1, 0], [0, 1, 0]])
    groups = torch.tensor([[2, 2, 2], [0, 0, 0]])
    parts = SiameseLoss("triplet+ce", margin=0.1, triplet_weight=0.5, ce_weight=2.0)(emb, logits, labels, groups)
    ce = F.cross_entropy(logits[[0, 3]], torch.tensor([2, 0]))
    assert torch.allclose(parts.parts["ce"], ce) and set(parts.parts) == {"triplet", "ce"}
    assert torch.allclose(parts.total, 0.5 * plain_triplet(emb, labels, 0.1) + 2.0 * ce, atol=1e-6)
    only_ce = SiameseLoss("ce")(emb, logits, labels, groups)
    assert torch.allclose(only_ce.total, ce) and set(only_ce.parts) == {"ce"}


def test_pair_loss_is_binary_cross_entropy() -> None:
    from pcbsiam.train.losses import PairLoss

    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    parts = PairLoss(pos_weight=2.0)(logits, labels)
    manual = (
        -(
            2.0 * torch.log(torch.sigmoid(torch.tensor(2.0)))
            + torch.log(1 - torch.sigmoid(torch.tensor(-1.0)))
            + torch.log(1 - torch.sigmoid(torch.tensor(0.5)))
        )
        / 3
    )
    assert torch.allclose(parts.total, manual, atol=1e-6) and set(parts.parts) == {"bce"}


def test_pair_loss_focal_form_weights_each_pair_by_how_wrong_it_is() -> None:
    from pcbsiam.train.losses import PairLoss

    logits, labels = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1, 0, 0])
    p_true = torch.sigmoid(torch.tensor([2.0, 1.0, -0.5]))  # probability of each pair's own label
    ce = -torch.log(p_true) * torch.tensor([2.0, 1.0, 1.0])  # pos_weight 2 on the defective pair
    parts = PairLoss(pos_weight=2.0, focal_gamma=2.0)(logits, labels)
    assert torch.allclose(parts.total, (ce * (1 - p_true) ** 2).mean(), atol=1e-6) and set(parts.parts) == {"focal"}
    # gamma 0 is the plain cross-entropy, whichever path computes it
    plain = PairLoss(pos_weight=2.0)(logits, labels).total
    assert torch.allclose(PairLoss(pos_weight=2.0, focal_gamma=1e-12)(logits, labels).total, plain, atol=1e-6)
