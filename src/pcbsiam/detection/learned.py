"""Candidate-and-verify detection: classical candidates, typed and boxed by a network.

The classical detector (:class:`~pcbsiam.detection.classical.ClassicalDetector`) proposes boxes
around the blobs where the registered pair differs beyond the tolerance band. Each proposal becomes a
square window, a little larger than its box, cut at the same place from the tested image and from the
template moved onto it; :class:`~pcbsiam.models.detector.CandidateNet` says whether the window holds a
defect, of which type (reading the rules' type too, when trained so), and how to move the box's corners
to the defect's (DeepPCB's loose) box.
Overlapping boxes of one defect are merged by non-maximum suppression (``torchvision.ops.nms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn
from torchvision.ops import box_iou, nms

from pcbsiam.checkpoint import load_tagged, save_tagged
from pcbsiam.config import VIEW_COUNTS
from pcbsiam.data.defects import DEFECT_CODES
from pcbsiam.data.registration import Shift, overlap_mask, shift_image
from pcbsiam.data.transforms import DIHEDRAL_VIEWS, crop, dihedral_tensor, to_tensor, undo_dihedral_moves
from pcbsiam.detection.classical import ClassicalDetector
from pcbsiam.detection.records import Detections
from pcbsiam.models.detector import CandidateNet, Verdicts, VerifierConfig

__all__ = [
    "DETECTOR_FORMAT",
    "RULE_FAMILIES",
    "Candidates",
    "LearnedDetector",
    "Verifier",
    "WindowSpec",
    "cut_windows",
    "detector_record",
    "drop_pieces",
    "at_edge",
    "prefer_rules",
    "split_by_rules",
    "load_detector",
    "save_detector",
]

DETECTOR_FORMAT = "pcbsiam-detector"
DETECTOR_VERSION = 1


@dataclass(frozen=True)
class WindowSpec:
    """How a candidate box becomes a network input.

    Attributes:
        grow: the window's side is ``grow`` times the box's longer side...
        min_side: ...and at least this many px (DeepPCB boxes are 19-173 px, median 38).
        candidates: settings of the classical proposals (:class:`ClassicalDetector` fields); looser than the
            classical detector's own (a 2x2 opening keeps thin mousebites: about 98 % of DeepPCB's defects
            are proposed, against 96 %), as the network drops the extra ones.
    """

    grow: float = 1.5
    min_side: int = 64
    candidates: tuple[tuple[str, Any], ...] = (("min_pixels", 4), ("open_size", 2), ("vanished_tracks", True))

    def proposer(self) -> ClassicalDetector:
        """The classical detector that proposes the candidates (with ``vanished_tracks`` unless ``candidates``
        say otherwise: detectors saved before it existed get it too)."""
        return ClassicalDetector(**({"vanished_tracks": True} | dict(self.candidates)))  # older files lack the key

    def windows(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) int windows ``x0 y0 side side`` centred on (N, 4) ``x1 y1 x2 y2`` boxes (may leave the image)."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        side = np.maximum(
            self.min_side, np.ceil(self.grow * np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
        )
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        x0, y0 = np.round(cx - side / 2), np.round(cy - side / 2)
        return np.column_stack([x0, y0, side, side]).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (saved with the weights)."""
        d = asdict(self)
        d["candidates"] = dict(self.candidates)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WindowSpec:
        """Inverse of :meth:`to_dict`."""
        d = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if "candidates" in d:
            d["candidates"] = tuple(sorted(d["candidates"].items()))
        return cls(**d)


def aligned_template(template: np.ndarray, shift: Shift, tested: np.ndarray) -> np.ndarray:
    """The template moved onto the tested image (``out[y, x] = template[y - dy, x - dx]``); in the strip it
    no longer covers, the tested image's own pixels (so that the pair agrees there, as the patch crops do)."""
    moved = shift_image(template, shift.dy, shift.dx, fill=0)
    return np.where(overlap_mask(template.shape, shift.dy, shift.dx), moved, tested)


def cut_windows(image: np.ndarray, windows: np.ndarray, fill: int | None = None) -> list[np.ndarray]:
    """Square crops ``(side, side)`` of an (H, W) uint8 image at (N, 4) ``x0 y0 side side`` windows
    (:func:`pcbsiam.data.transforms.crop`); what lies outside the image is ``fill`` (default: the image's
    median grey; give the pair one value)."""
    return [crop(image, y0, x0, side, side, fill) for x0, y0, side, _ in np.asarray(windows, np.int64).tolist()]


def boxes_in_windows(boxes: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(N, 4) ``x1 y1 x2 y2`` image boxes in the unit frame of their (N, 4) windows."""
    w = np.asarray(windows, dtype=np.float64)
    origin = np.column_stack([w[:, 0], w[:, 1], w[:, 0], w[:, 1]])
    return (np.asarray(boxes, dtype=np.float64) - origin) / w[:, 2:3]


def boxes_from_windows(unit: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Inverse of :func:`boxes_in_windows`."""
    w = np.asarray(windows, dtype=np.float64)
    origin = np.column_stack([w[:, 0], w[:, 1], w[:, 0], w[:, 1]])
    return np.asarray(unit, dtype=np.float64) * w[:, 2:3] + origin


class Verifier(Protocol):
    """What verifies candidate windows: a :class:`CandidateNet`, or the same network run by another engine
    (``pcbsiam.deploy.verifier.OrtVerifier``).

    Attributes:
        cfg: the network's settings (input size, types, whether it reads the rules' type).
    """

    cfg: VerifierConfig

    def __call__(
        self, tested: torch.Tensor, reference: torch.Tensor, rule_types: torch.Tensor | None = None
    ) -> Verdicts:
        """Verdicts of (B, 1, S, S) normalised tested windows against their (B, 1, S, S) reference windows."""
        ...


class Candidates(NamedTuple):
    """A board pair's proposals and what the verifier sees of them.

    Attributes:
        proposals: the classical proposals (boxes, the rules' types, the pair's shift).
        fine: (N,) bool, proposed by the finer band only.
        windows: (N, 4) ``x0 y0 side side`` windows around them.
        tested: N (side, side) uint8 crops of the tested image.
        reference: N crops of the template moved onto it.
    """

    proposals: Detections
    fine: np.ndarray
    windows: np.ndarray
    tested: list[np.ndarray]
    reference: list[np.ndarray]


class LearnedDetector:
    """Typed defect boxes of a board pair: classical candidates verified, typed and boxed by a network.

    Args:
        net: the trained verifier, or several trained on the same candidates (an ensemble: their class
            probabilities and box moves are averaged, as the views' are; each costs a forward pass); a
            :class:`CandidateNet` or another engine running one (:class:`Verifier`).
        spec: how candidates become windows.
        device: where the network runs.
        min_confidence: detections below this confidence are dropped (0.5: a candidate is reported when
            its most likely type is more likely than all the other classes together, "no defect" included).
        nms_iou: boxes overlapping a more confident one by more than this IoU are dropped.
        batch_size: windows per forward pass (times ``views``: the views of a batch go through together).
        views: test-time views of each window (1, 2, 4 or 8 of :data:`~pcbsiam.data.transforms.DIHEDRAL_VIEWS`):
            the class probabilities and the box moves, brought back to the window, are averaged over them.
        rule_families: groups of types the classical rules tell apart better than the network: where the
            network's type and the rules' both lie in one, the rules' is taken (:func:`split_by_rules`). By
            default :data:`RULE_FAMILIES` (measured better on both held-out sets, docs/RESULTS.md); ``()``: none.
        rule_wins: ``(network type, rules' type)`` pairs of DeepPCB codes where the rules' type is taken, one way
            only (:func:`prefer_rules`; e.g. ``(1, 3)``: a candidate the network calls an open and the rules a
            mousebite, a hole that splits no conductor, is a mousebite). Applied after ``rule_families``. Empty by
            default: ``(1, 3)`` helped one unseen design and cost F on five others (docs/RESULTS.md).
        fine_band: also propose the missing copper a band this many px wide sees (the proposer's ``fine_k``:
            bites shallower than the 2 px band); 0: the candidates the verifier was trained on, unchanged.
        fine_min_confidence: what a detection from the finer band's candidates must reach (and at least
            ``min_confidence``): a verifier trained without them rejects most of them, and the stricter cut
            keeps the few it is sure of. Such a detection also comes second in the suppression: it is dropped
            where it meets a detection from the band's own candidates (docs/RESULTS.md).
        views_below: with ``views`` > 1, the other views only for the windows whose first view gives every class
            ("no defect" included) a probability below this; a window the first view is sure of keeps its
            verdict (at 0.9 about 6 % of DeepPCB's windows get the other views, docs/RESULTS.md). None: every
            window gets every view.
        piece_share: a detection whose box lies, for at least this share of its area, inside the box of a more
            confident detection of the same type is dropped: a piece of that defect (a long open or short is
            sometimes proposed whole and in part). None: kept. Applied after the suppression (which compares
            IoU, and misses a small box inside a large one; docs/RESULTS.md).
        edge_weight: the confidence of a detection whose box touches the image's edge (within
            :data:`EDGE_PX`) is multiplied by this, after the confidence cuts, so that it ranks below the others:
            there a verdict is right less often (on DeepPCB's seven cross-validation folds, 31 % of the false
            detections touch the edge and 0.4 % of the correct ones; docs/RESULTS.md). The confidence reported
            (and compared by ``inspect --flag-detections``) is the weighted one. 1: unchanged.

    Raises:
        ValueError: ``views`` is not 1, 2, 4 or 8, two ``rule_families`` share a type, no verifier is given,
            the verifiers differ in input size, types or whether they read the rules' type, ``fine_band`` is
            not below the candidates' band, a confidence is outside [0, 1], or ``views_below``, ``piece_share`` or
            ``edge_weight`` is outside (0, 1].
    """

    def __init__(
        self,
        net: Verifier | Sequence[Verifier],
        spec: WindowSpec,
        device: str | torch.device = "cpu",
        min_confidence: float = 0.5,
        nms_iou: float = 0.3,
        batch_size: int = 64,
        views: int = 1,
        rule_families: tuple[tuple[int, ...], ...] | None = None,
        rule_wins: tuple[tuple[int, int], ...] = (),
        fine_band: int = 0,
        fine_min_confidence: float = 0.9,
        views_below: float | None = None,
        piece_share: float | None = 0.5,
        edge_weight: float = 0.5,
    ) -> None:
        if views not in VIEW_COUNTS:
            raise ValueError(f"views must be one of {', '.join(map(str, VIEW_COUNTS))}, not {views}")
        nets = tuple(net) if isinstance(net, (list, tuple)) else (net,)
        if not nets:
            raise ValueError("a learned detector needs at least one verifier")
        shapes = {(n.cfg.input_size, n.cfg.num_types, n.cfg.rule_types) for n in nets}
        if len(shapes) > 1:
            raise ValueError(
                "the verifiers of one detector must share input size, number of types and whether they read "
                f"the rules' type; got (input_size, num_types, rule_types) = {sorted(shapes)}"
            )
        self.device = torch.device(device)
        self.nets = tuple(n.to(self.device).eval() if isinstance(n, nn.Module) else n for n in nets)
        for name, value in (("min_confidence", min_confidence), ("fine_min_confidence", fine_min_confidence)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        for name, value in (("views_below", views_below), ("piece_share", piece_share), ("edge_weight", edge_weight)):
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must lie in (0, 1], got {value}")
        self.spec = spec
        self.proposer = spec.proposer()
        if fine_band:
            self.proposer = replace(self.proposer, fine_k=fine_band)
        self.min_confidence = min_confidence
        self.fine_min_confidence = fine_min_confidence
        self.nms_iou = nms_iou
        self.batch_size = batch_size
        self.views = views
        self.views_below = views_below
        self.piece_share = piece_share
        self.edge_weight = edge_weight
        self.rule_families = RULE_FAMILIES if rule_families is None else tuple(map(tuple, rule_families))
        named = [t for family in self.rule_families for t in family]
        if len(named) != len(set(named)):
            raise ValueError(f"rule_families must not share a type (they apply one after another): {rule_families}")
        self.rule_wins = tuple((int(a), int(b)) for a, b in rule_wins)
        codes = range(1, self.net.cfg.num_types + 1)
        if any(a not in codes or b not in codes or a == b for a, b in self.rule_wins):
            raise ValueError(f"rule_wins must pair two different type codes in 1..{codes[-1]}, got {rule_wins}")

    @property
    def net(self) -> Verifier:
        """The first verifier (the only one unless this is an ensemble)."""
        return self.nets[0]

    @torch.inference_mode()
    def verify(
        self,
        tested_windows: list[np.ndarray],
        reference_windows: list[np.ndarray],
        rule_types: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities (N, 1 + types) and unit-frame corner moves (N, 4) of N candidate windows
        (``rule_types``: their (N,) classical types, read by a verifier trained with them), averaged over
        the views and the verifiers (with ``views_below``, over the first view alone where it is sure)."""
        size = self.net.cfg.input_size
        hints = None if rule_types is None else torch.as_tensor(np.asarray(rule_types, dtype=np.int64))
        views = DIHEDRAL_VIEWS[: self.views]
        probs, deltas = [], []
        for s in range(0, len(tested_windows), self.batch_size):
            t = to_tensor(tested_windows[s : s + self.batch_size], size).to(self.device)
            r = to_tensor(reference_windows[s : s + self.batch_size], size).to(self.device)
            h = None if hints is None else hints[s : s + self.batch_size].to(self.device)
            if self.views_below is None or len(views) == 1:
                p, d = self._views(t, r, h, views)
            else:  # the first view for every window, the others for the windows it leaves unsure
                p, d = self._views(t, r, h, views[:1])
                unsure = torch.nonzero(p.max(1).values < self.views_below).flatten()
                if len(unsure):
                    p_rest, d_rest = self._views(t[unsure], r[unsure], None if h is None else h[unsure], views[1:])
                    share = 1 / len(views)  # the mean over all views, the first one's share kept
                    p[unsure] = share * p[unsure] + (1 - share) * p_rest
                    d[unsure] = share * d[unsure] + (1 - share) * d_rest
            probs.append(p.cpu().numpy())
            deltas.append(d.cpu().numpy())
        if not probs:
            return np.zeros((0, 1 + self.net.cfg.num_types)), np.zeros((0, 4))
        return np.concatenate(probs), np.concatenate(deltas)

    def _views(
        self, t: torch.Tensor, r: torch.Tensor, h: torch.Tensor | None, views: Sequence[tuple[int, bool]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1 + types) class probabilities and (B, 4) corner moves of (B, 1, S, S) windows, averaged over
        ``views`` (all of them in one forward pass) and over the verifiers."""
        tv = torch.cat([dihedral_tensor(t, *v) for v in views])
        rv = torch.cat([dihedral_tensor(r, *v) for v in views])
        hv = None if h is None else h.repeat(len(views))
        p, d = 0.0, 0.0
        for net in self.nets:
            out = net(tv, rv, hv)
            p = p + out.logits.softmax(1).view(len(views), len(t), -1).mean(0)
            moves = out.deltas.view(len(views), len(t), 4)
            d = d + torch.stack([undo_dihedral_moves(m, *v) for m, v in zip(moves, views, strict=True)]).mean(0)
        return p / len(self.nets), d / len(self.nets)

    def candidates(self, tested: np.ndarray, template: np.ndarray) -> Candidates:
        """The proposals of a (H, W) uint8 board pair and their windows, as the verifier is given them."""
        proposals, fine = self.proposer.propose(tested, template)
        windows = self.spec.windows(proposals.boxes)
        if not len(proposals):
            return Candidates(proposals, fine, windows, [], [])
        reference = aligned_template(template, proposals.shift, tested)
        fill = int(np.median(tested))
        cut = (cut_windows(tested, windows, fill), cut_windows(reference, windows, fill))
        return Candidates(proposals, fine, windows, *cut)

    def detect(self, tested: np.ndarray, template: np.ndarray) -> Detections:
        """Find, type and box the defects of a (H, W) uint8 tested board against its template.

        Raises:
            ValueError: the images are not two (H, W) uint8 arrays of one shape.
        """
        proposals, fine, windows, tested_windows, reference_windows = self.candidates(tested, template)
        if not len(proposals):
            return proposals
        probs, deltas = self.verify(tested_windows, reference_windows, proposals.types)
        kinds = probs[:, 1:].argmax(1) + 1
        confidence = probs[np.arange(len(kinds)), kinds]
        for family in self.rule_families:
            kinds, confidence = split_by_rules(probs, kinds, confidence, proposals.types, family)
        for network_type, rules_type in self.rule_wins:
            kinds, confidence = prefer_rules(probs, kinds, confidence, proposals.types, network_type, rules_type)
        unit = boxes_in_windows(proposals.boxes, windows) + deltas
        boxes = boxes_from_windows(unit, windows)
        height, width = tested.shape
        boxes = np.clip(boxes, 0, [width, height, width, height])
        cut = np.where(fine, max(self.min_confidence, self.fine_min_confidence), self.min_confidence)
        keep = (confidence >= cut) & (boxes[:, 2] > boxes[:, 0] + 1) & (boxes[:, 3] > boxes[:, 1] + 1)
        boxes, confidence, kinds, fine = boxes[keep], confidence[keep], kinds[keep], fine[keep]
        if not len(boxes):
            return Detections.empty(proposals.shift)
        order = self._suppress(boxes, confidence, fine)
        if self.piece_share is not None:
            order = drop_pieces(boxes, kinds, order, self.piece_share)
        boxes, confidence, kinds = boxes[order], confidence[order], kinds[order]
        if self.edge_weight < 1:
            confidence = np.where(at_edge(boxes, tested.shape), self.edge_weight * confidence, confidence)
            order = np.argsort(-confidence, kind="stable")
            boxes, confidence, kinds = boxes[order], confidence[order], kinds[order]
        return Detections(boxes, confidence, kinds, proposals.shift)

    def _suppress(self, boxes: np.ndarray, confidence: np.ndarray, fine: np.ndarray) -> np.ndarray:
        """Indices of the (N, 4) boxes kept by non-maximum suppression, most confident first.

        A box of the finer band's candidates (``fine``, (N,) bool) comes second: it is dropped where it meets any
        kept box of the band's own candidates (there it is a piece of a defect already found, or a tighter copy
        of its box) and never suppresses one; the finer band's remaining boxes suppress among themselves.
        """
        b, c = torch.from_numpy(boxes).float(), torch.from_numpy(confidence).float()
        first = np.flatnonzero(~fine)[nms(b[~fine], c[~fine], self.nms_iou).numpy()]
        rest = np.flatnonzero(fine)
        if len(rest) and len(first):
            rest = rest[(box_iou(b[rest], b[first]) <= 0).all(1).numpy()]
        if len(rest):
            rest = rest[nms(b[rest], c[rest], self.nms_iou).numpy()]
        kept = np.concatenate([first, rest])
        return kept[np.argsort(-confidence[kept], kind="stable")]


#: A box this close (px) to the image's edge touches it (:class:`LearnedDetector`'s ``edge_weight``).
EDGE_PX = 1


def at_edge(boxes: np.ndarray, shape: tuple[int, int], px: float = EDGE_PX) -> np.ndarray:
    """(N,) bool: which (N, 4) ``x1 y1 x2 y2`` boxes reach within ``px`` of the edge of an image of ``shape`` (H, W)."""
    height, width = shape
    return (boxes[:, 0] <= px) | (boxes[:, 1] <= px) | (boxes[:, 2] >= width - px) | (boxes[:, 3] >= height - px)


def drop_pieces(boxes: np.ndarray, kinds: np.ndarray, order: np.ndarray, share: float) -> np.ndarray:
    """``order`` without the boxes that are pieces of a box kept before them.

    Args:
        boxes: (N, 4) ``x1 y1 x2 y2``.
        kinds: (N,) types.
        order: indices into them, most confident first.
        share: a box at least this share of whose area lies inside a kept box of the same type is dropped.

    Returns:
        The kept indices, in ``order``'s order.
    """
    b = boxes[order]
    lo, hi = np.maximum(b[:, None, :2], b[None, :, :2]), np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)  # (n, n) intersections
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inside = (inter >= share * area[:, None]) & (kinds[order][:, None] == kinds[order][None, :])
    kept: list[int] = []
    for i in range(len(order)):
        if not inside[i, kept].any():
            kept.append(i)
    return order[kept]


#: Types the classical rules tell apart by topology: extra copper attached to one conductor (spur) or to none
#: (spurious copper); missing copper that opens to a conductor's edge (mousebite) or is enclosed in it (pin-hole).
#: Not open against mousebite: the rules' "splits a conductor" test is the weaker one (docs/RESULTS.md).
RULE_FAMILIES: tuple[tuple[int, ...], ...] = (
    (DEFECT_CODES["spur"], DEFECT_CODES["spurious_copper"]),
    (DEFECT_CODES["mousebite"], DEFECT_CODES["pin_hole"]),
)


def split_by_rules(
    probs: np.ndarray, kinds: np.ndarray, confidence: np.ndarray, rule_types: np.ndarray, family: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Let the classical rules choose the type within ``family`` where the network's type and theirs both lie in it.

    The network sees a window; the rules see how the blob touches the template's conductors, which is what
    separates, say, a spur from spurious copper. Such a candidate takes the rules' type, with the network's
    probability of the whole family as its confidence.

    Args:
        probs: (N, 1 + types) class probabilities (column 0: no defect; column k: DeepPCB code k).
        kinds: (N,) the network's types (DeepPCB codes).
        confidence: (N,) their probabilities.
        rule_types: (N,) the rules' types.
        family: DeepPCB codes the rules tell apart.

    Returns:
        The types and confidences, changed where both types lie in ``family``.
    """
    both = np.isin(kinds, family) & np.isin(rule_types, family)
    return np.where(both, rule_types, kinds), np.where(both, probs[:, list(family)].sum(1), confidence)


def prefer_rules(
    probs: np.ndarray,
    kinds: np.ndarray,
    confidence: np.ndarray,
    rule_types: np.ndarray,
    network_type: int,
    rules_type: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Take the rules' type where the network says ``network_type`` and the rules ``rules_type`` (one way only).

    :func:`split_by_rules` for a pair the rules decide in one direction only: their "no conductor is split"
    (a mousebite) is topology, while their "a conductor is split" also fires on deep bites. The candidate keeps
    the network's probability of both types as its confidence.

    Args:
        probs: (N, 1 + types) class probabilities (column 0: no defect; column k: DeepPCB code k).
        kinds: (N,) the network's types (DeepPCB codes).
        confidence: (N,) their probabilities.
        rule_types: (N,) the rules' types.
        network_type: the network's type that gives way.
        rules_type: the rules' type that is taken.

    Returns:
        The types and confidences, changed where the network says ``network_type`` and the rules ``rules_type``.
    """
    wins = (kinds == network_type) & (rule_types == rules_type)
    pair = probs[:, network_type] + probs[:, rules_type]
    return np.where(wins, rules_type, kinds), np.where(wins, pair, confidence)


def save_detector(path: str | Path, net: CandidateNet, spec: WindowSpec, record: dict[str, Any]) -> Path:
    """Write the verifier's weights, settings and a plain record of its training, atomically."""
    payload = {
        "state_dict": net.state_dict(),
        "net": net.cfg.to_dict(),
        "windows": spec.to_dict(),
        "record": record,
    }
    return save_tagged(path, DETECTOR_FORMAT, DETECTOR_VERSION, payload)


def _detector_file(path: str | Path) -> Path:
    path = Path(path)
    return path / "detector.pt" if path.is_dir() else path


def _read_detector(path: str | Path) -> dict[str, Any]:
    remedy = "train it with pcbsiam train-detector"
    return load_tagged(_detector_file(path), DETECTOR_FORMAT, DETECTOR_VERSION, "detector", remedy=remedy)


def detector_record(path: str | Path) -> dict[str, Any]:
    """The plain record a detector file keeps of its training (data, split, items, settings, seconds)."""
    return dict(_read_detector(path).get("record", {}))


def load_detector(
    path: str | Path | Sequence[str | Path], device: str | torch.device = "cpu", **kwargs: Any
) -> LearnedDetector:
    """A :class:`LearnedDetector` from files written by :func:`save_detector` (``weights_only=True``).

    Args:
        path: the detector file (or a training folder holding ``detector.pt``), or several of them, trained
            on the same candidates (e.g. with different ``--seed``): their verifiers are averaged.
        device: where the network runs.
        kwargs: :class:`LearnedDetector` settings (``min_confidence``, ``nms_iou``, ``batch_size``, ``views``,
            ``fine_band``, ``fine_min_confidence``, ``views_below``, ``piece_share``, ``edge_weight``).

    Raises:
        ValueError: no file, or several whose candidates or windows differ or whose verifiers cannot be averaged.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths:
        raise ValueError("no detector file given")
    nets, specs = [], []
    for p in paths:
        data = _read_detector(p)
        net = CandidateNet(VerifierConfig(**data["net"]))
        net.load_state_dict(data["state_dict"])
        nets.append(net)
        specs.append(WindowSpec.from_dict(data["windows"]))
    if any(spec != specs[0] for spec in specs[1:]):
        raise ValueError(
            "detectors averaged together must propose and cut the same candidates; these differ in their "
            f"window settings: {', '.join(str(p) for p in paths)}"
        )
    return LearnedDetector(nets, specs[0], device, **kwargs)
