"""Training objectives: what a mode trains on and with which loss.

A network names its objective (``PairModel.objective``); this module maps the name to the training
items, the loss and what the loss reports, so that the training loop, the throughput benchmark and the
learning curves never test a mode's name.

* ``triplet`` (the paper's mode): the sampler's triplets (anchor, positive = defective, negative =
  defect-free of the same PCB type), triplet margin loss plus cross-entropy on the PCB type.
* ``pair`` (the reference-aware modes): balanced (tested, reference) pairs with binary cross-entropy,
  references moved by up to ``train.ref_shift`` px.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from pcbsiam.config import Config, TrainConfig
from pcbsiam.data.crops import PatchSpec
from pcbsiam.data.datasets import PairTrainDataset, TripletDataset, sample_pairs
from pcbsiam.data.sampler import sample_triplets
from pcbsiam.models import mode_class
from pcbsiam.train.losses import PairLoss, SiameseLoss

if TYPE_CHECKING:
    from pcbsiam.train.fit import SplitData


class Objective:
    """What a network trains on (items of a :class:`torch.utils.data.Dataset`) and its loss.

    Attributes:
        name: the name networks give in ``PairModel.objective``.
        item_name: what one training item is (``triplets``, ``pairs``), for throughput figures.
    """

    name: ClassVar[str]
    item_name: ClassVar[str]

    def dataset(self, cfg: Config, data: SplitData) -> Dataset:
        """The training items of a run."""
        raise NotImplementedError

    def loss(self, train: TrainConfig) -> nn.Module:
        """The loss module; its ``batch_loss(model, batch, device)`` knows the batch layout."""
        raise NotImplementedError

    def has_unused_parameters(self, train: TrainConfig) -> bool:
        """Whether some parameters get no gradient (DistributedDataParallel must be told)."""
        return False

    def synthetic_batch(self, input_size: int, batch_size: int, seed: int = 0) -> tuple:
        """A random batch of the layout the loss takes (for throughput benchmarks)."""
        raise NotImplementedError


class TripletObjective(Objective):
    """The paper's triplets with triplet margin loss and cross-entropy (``train.loss``)."""

    name = "triplet"
    item_name = "triplets"

    def dataset(self, cfg: Config, data: SplitData) -> Dataset:
        t = cfg.train
        triplets = sample_triplets(data.train_index.labels, data.train_index.group_ids, t.triplets, t.seed)
        return TripletDataset(
            data.train_store,
            data.train_index,
            triplets,
            PatchSpec.from_config(cfg),
            augment=t.augment,
            seed=t.seed,
            photometric=t.photometric,
        )

    def loss(self, train: TrainConfig) -> nn.Module:
        return SiameseLoss(train.loss, train.margin, train.triplet_weight, train.ce_weight)

    def has_unused_parameters(self, train: TrainConfig) -> bool:
        return "ce" not in train.loss.split("+")  # the classifier head gets no gradient

    def synthetic_batch(self, input_size: int, batch_size: int, seed: int = 0) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        labels = torch.tensor([[1, 1, 0], [0, 1, 0]]).repeat(batch_size // 2 + 1, 1)[:batch_size]
        images = torch.randn(batch_size, 3, 1, input_size, input_size, generator=gen)
        return images, labels, torch.zeros(batch_size, 3, dtype=torch.long)


class PairObjective(Objective):
    """Balanced (tested, reference) pairs with binary cross-entropy."""

    name = "pair"
    item_name = "pairs"

    def dataset(self, cfg: Config, data: SplitData) -> Dataset:
        t = cfg.train
        items = sample_pairs(data.train_index.labels, t.pairs, t.seed)
        spec = PatchSpec.from_config(cfg)
        return PairTrainDataset(
            data.train_store,
            data.train_index,
            items,
            spec,
            augment=t.augment,
            ref_shift=t.ref_shift,
            seed=t.seed,
            photometric=t.photometric,
        )

    def loss(self, train: TrainConfig) -> nn.Module:
        return PairLoss(train.pos_weight, train.focal_gamma)

    def synthetic_batch(self, input_size: int, batch_size: int, seed: int = 0) -> tuple:
        gen = torch.Generator().manual_seed(seed)
        shape = (batch_size, 1, input_size, input_size)
        return torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen), torch.arange(batch_size) % 2


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (TripletObjective(), PairObjective())}


def objective_for(cfg: Config) -> Objective:
    """The objective the network of ``cfg.model.mode`` trains with."""
    return OBJECTIVES[mode_class(cfg.model.mode).objective]
