"""The paper's triplet sampler (section 3.1) and splits by whole image."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pcbsiam.data.records import BoardPair
from pcbsiam.errors import ConfigError


def sample_triplets(labels: np.ndarray, groups: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Draw ``n`` triplets by the paper's rule.

    Draw k (1-based): positive = a random defective item P1; negative = a defect-free item of P1's
    PCB type; anchor = another item of P1's type, defective when k is odd and defect-free when k is
    even. The anchor never repeats the positive or the negative. Types lacking what a draw needs
    are not used for that draw.

    Args:
        labels: (N,) 1 defective, 0 defect-free.
        groups: (N,) PCB type of each item (any hashable values).
        n: number of triplets.
        seed: random seed; the same seed gives the same triplets.

    Returns:
        (n, 3) int64 rows (anchor, positive, negative) of item indices.

    Raises:
        ValueError: no PCB type has enough items for both kinds of draw.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    by_type: dict[object, tuple[np.ndarray, np.ndarray]] = {}
    for g in np.unique(groups):
        in_g = groups == g
        by_type[g] = (np.flatnonzero(in_g & (labels == 1)), np.flatnonzero(in_g & (labels == 0)))
    odd_ok = np.asarray([len(d) >= 2 and len(f) >= 1 for d, f in by_type.values()])
    even_ok = np.asarray([len(d) >= 1 and len(f) >= 2 for d, f in by_type.values()])
    types = list(by_type)
    # positives are drawn over all usable defective items, so types weigh by their defect count
    pos_pool = {
        odd: np.concatenate([by_type[t][0] for t, ok in zip(types, oks, strict=True) if ok] or [np.zeros(0, int)])
        for odd, oks in ((True, odd_ok), (False, even_ok))
    }
    if len(pos_pool[True]) == 0 or len(pos_pool[False]) == 0:
        raise ValueError(
            "cannot draw triplets: some PCB type needs at least 2 defective and 2 defect-free items "
            f"(found per type: {[(str(t), len(d), len(f)) for t, (d, f) in by_type.items()]})"
        )
    type_of = {int(i): g for g, (d, _) in by_type.items() for i in d}
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3), dtype=np.int64)
    for k in range(1, n + 1):
        odd = k % 2 == 1
        pos = int(rng.choice(pos_pool[odd]))
        defective, free = by_type[type_of[pos]]
        if odd:
            neg = int(rng.choice(free))
            others = defective[defective != pos]
            anchor = int(rng.choice(others))
        else:
            pick = rng.choice(len(free), size=2, replace=False)
            neg, anchor = int(free[pick[0]]), int(free[pick[1]])
        out[k - 1] = (anchor, pos, neg)
    return out


def split_by_image(pairs: list[BoardPair], val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split items into training and validation by whole image, stratified by PCB type.

    Each type with at least two items gives ``round(val_fraction * n)`` of them (at least one) to
    validation; a fixed seed gives a fixed split.

    Returns:
        (train indices, validation indices), each sorted int64.

    Raises:
        ConfigError: ``val_fraction`` outside [0, 1).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    by_group: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        by_group[p.group].append(i)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for g in sorted(by_group):
        items = np.asarray(by_group[g])
        if val_fraction == 0 or len(items) < 2:
            continue
        k = max(1, int(round(val_fraction * len(items))))
        val.extend(rng.permutation(items)[:k].tolist())
    val_idx = np.asarray(sorted(val), dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(pairs)), val_idx).astype(np.int64)
    return train_idx, val_idx


def split_by_group(pairs: list[BoardPair], holdout: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Leave-groups-out split: every item of a ``holdout`` group goes to validation.

    Raises:
        ConfigError: a holdout group does not occur in ``pairs``.
    """
    present = {p.group for p in pairs}
    missing = [g for g in holdout if g not in present]
    if missing:
        raise ConfigError(f"data.holdout_groups names unknown group(s) {missing}; the data's groups: {sorted(present)}")
    is_val = np.asarray([p.group in holdout for p in pairs])
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)
