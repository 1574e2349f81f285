from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pcbsiam.config import ModelConfig
from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.datasets import PairDataset, PatchCropper
from pcbsiam.data.protocol import PatchIndex
from pcbsiam.data.records import BoardPair
from pcbsiam.data.sources import patches_of
from pcbsiam.data.store import BoardStore
from pcbsiam.evaluation.scoring import ReferenceCache, evaluate, score_index, weights_fingerprint
from pcbsiam.models import create_model

CPU = torch.device("cpu")


def shared_reference_store(n_tested: int = 3) -> BoardStore:
    """The paper's layout in small: ``n_tested`` boards of one type, all compared with one standard board."""
    rng = np.random.default_rng(0)
    standard = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    tested = [
        np.clip(standard.astype(int) + rng.integers(-20, 20, (64, 64)), 0, 255).astype(np.uint8)
        for _ in range(n_tested)
    ]
    pairs = [BoardPair(f"t{i}", "typeA", Path(f"t{i}.png"), Path("standard.png")) for i in range(n_tested)]
    return BoardStore(pairs, tested, [standard] * n_tested)


def plain_scores(model: torch.nn.Module, store: BoardStore, index) -> np.ndarray:  # noqa: ANN001
    return evaluate(model, DataLoader(PairDataset(store, index, PatchSpec(input_size=32)), batch_size=4), CPU).scores


def counting(model: torch.nn.Module) -> list[int]:
    """Patch the model's encode to record the batch size of each call."""
    calls: list[int] = []
    encode = model.encode

    def wrapped(x: torch.Tensor):  # noqa: ANN202
        calls.append(len(x))
        return encode(x)

    model.encode = wrapped
    return calls


@pytest.mark.parametrize("mode", ["paper", "diff"])
def test_each_distinct_reference_is_encoded_once_and_scores_are_unchanged(mode: str) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(mode=mode, backbone="resnet18", hidden_dim=16, embedding_dim=8)).eval()
    store = shared_reference_store(3)
    index = patches_of(store, patch=32)  # 4 patches a board, 12 in all, 4 distinct reference crops
    assert len(index) == 12
    expected = plain_scores(model, store, index)
    calls = counting(model)
    cache = ReferenceCache()
    got = score_index(model, store, index, PatchSpec(input_size=32), CPU, batch_size=5, cache=cache)
    np.testing.assert_allclose(got.scores, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got.labels, index.labels)
    assert cache.encoded == 4 and len(cache) == 4
    assert sum(calls) == 4 + 12  # 4 references, 12 tested patches

    # the same weights again: nothing of the references is encoded
    calls.clear()
    again = score_index(model, store, index, PatchSpec(input_size=32), CPU, batch_size=5, cache=cache)
    np.testing.assert_array_equal(again.scores, got.scores)
    assert sum(calls) == 12 and cache.hits == 4

    # other weights: the cache starts afresh
    with torch.no_grad():
        next(model.parameters()).add_(0.1)
    calls.clear()
    moved = score_index(model, store, index, PatchSpec(input_size=32), CPU, batch_size=5, cache=cache)
    assert sum(calls) == 4 + 12 and cache.encoded == 8
    np.testing.assert_allclose(moved.scores, plain_scores(model, store, index), rtol=1e-4, atol=1e-5)


def test_hits_survive_new_encodings_pushing_them_out_of_a_full_cache() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="resnet18", hidden_dim=16, embedding_dim=8)).eval()
    store = shared_reference_store(3)
    index = patches_of(store, patch=32)
    first = PatchIndex(index.rows[:8].copy(), index.groups)  # two boards sharing 4 reference crops: cached
    cache = ReferenceCache(max_items=4)
    score_index(model, store, first, PatchSpec(input_size=32), CPU, cache=cache)
    assert len(cache) == 4
    # a second call needing one cached crop and three new ones (other boxes) fills the cache past 4
    moved = index.rows[:3].copy()
    moved["y"], moved["x"] = [0, 32, 8], [8, 8, 32]
    mixed = PatchIndex(np.concatenate([index.rows[:1], moved]), index.groups)
    got = score_index(model, store, mixed, PatchSpec(input_size=32), CPU, cache=cache)
    np.testing.assert_allclose(got.scores, plain_scores(model, store, mixed), rtol=1e-4, atol=1e-5)


def test_distinct_references_and_the_stack_mode_take_the_plain_loop() -> None:
    store = shared_reference_store(2)
    store.pairs[1] = BoardPair("t1", "typeA", Path("t1.png"), Path("other.png"))  # one template each
    index = patches_of(store, patch=32)
    model = create_model(ModelConfig(backbone="resnet18", hidden_dim=16, embedding_dim=8)).eval()
    cache = ReferenceCache()
    score_index(model, store, index, PatchSpec(input_size=32), CPU, cache=cache)
    assert cache.encoded == 0
    stack = create_model(ModelConfig(mode="stack", backbone="resnet18", hidden_dim=16)).eval()
    shared = shared_reference_store(3)
    got = score_index(stack, shared, patches_of(shared, patch=32), PatchSpec(input_size=32), CPU, cache=cache)
    assert cache.encoded == 0
    np.testing.assert_allclose(got.scores, plain_scores(stack, shared, patches_of(shared, patch=32)), atol=1e-6)


def test_reference_key_follows_the_board_shift() -> None:
    store = shared_reference_store(2)
    index = patches_of(store, patch=32)
    crops = PatchCropper(store, index, PatchSpec())
    assert crops.reference_key(0) == crops.reference_key(4)  # same place on the same standard board
    store.shifts = np.array([[0, 0], [2, -1]])
    crops = PatchCropper(store, index, PatchSpec())
    assert crops.reference_key(0) != crops.reference_key(4)
    assert crops.reference_box(4) == (index.rows[4]["y"] - 2, index.rows[4]["x"] + 1, 32, 32)


def test_weights_fingerprint_tells_weights_apart() -> None:
    a = create_model(ModelConfig(backbone="resnet18", hidden_dim=16, embedding_dim=8))
    b = create_model(ModelConfig(backbone="resnet18", hidden_dim=16, embedding_dim=8))
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b)
    with torch.no_grad():
        b.threshold.fill_(0.5)  # the threshold changes no encoding
        assert weights_fingerprint(a) == weights_fingerprint(b)
        b.backbone.conv1.weight[0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(a) != weights_fingerprint(b)
