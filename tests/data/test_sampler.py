from pathlib import Path

import numpy as np
import pytest

from pcbsiam.data.records import BoardPair
from pcbsiam.data.sampler import sample_triplets, split_by_group, split_by_image


def toy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    groups = rng.choice(["a", "b", "c"], 300)
    labels[groups == "c"] = 0  # a type without defects is never used
    return labels, groups


def test_triplet_rules_and_alternation() -> None:
    labels, groups = toy()
    t = sample_triplets(labels, groups, 501, seed=7)
    assert t.shape == (501, 3)
    a, p, n = t.T
    assert np.all(labels[p] == 1) and np.all(labels[n] == 0)
    assert np.all(groups[a] == groups[p]) and np.all(groups[n] == groups[p])
    draws = np.arange(1, 502)
    assert np.all(labels[a][draws % 2 == 1] == 1) and np.all(labels[a][draws % 2 == 0] == 0)
    assert np.all(a != p) and np.all(a != n)
    assert not np.any(groups[p] == "c")


def test_triplets_deterministic_for_seed() -> None:
    labels, groups = toy()
    assert np.array_equal(sample_triplets(labels, groups, 50, 1), sample_triplets(labels, groups, 50, 1))
    assert not np.array_equal(sample_triplets(labels, groups, 50, 1), sample_triplets(labels, groups, 50, 2))


def test_triplets_impossible() -> None:
    with pytest.raises(ValueError, match="at least 2 defective"):
        sample_triplets(np.array([1, 0, 0]), np.array(["a", "a", "b"]), 4)


def pairs(n_per_group: dict[str, int]) -> list[BoardPair]:
    return [BoardPair(f"{g}{i}", g, Path("t"), Path("r")) for g, n in n_per_group.items() for i in range(n)]


def test_split_by_image_stratified_and_fixed() -> None:
    ps = pairs({"g1": 200, "g2": 50, "g3": 1})
    tr, va = split_by_image(ps, 0.1, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(ps)
    val_groups = [ps[i].group for i in va]
    assert val_groups.count("g1") == 20 and val_groups.count("g2") == 5 and "g3" not in val_groups
    assert np.array_equal(va, split_by_image(ps, 0.1, seed=0)[1])
    assert not np.array_equal(va, split_by_image(ps, 0.1, seed=1)[1])


def test_split_by_group() -> None:
    ps = pairs({"g1": 3, "g2": 2})
    tr, va = split_by_group(ps, ["g2"])
    assert [ps[i].group for i in va] == ["g2", "g2"] and len(tr) == 3
    with pytest.raises(ValueError, match="g9"):
        split_by_group(ps, ["g9"])
