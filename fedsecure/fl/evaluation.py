"""Utility of a model on held-out data: ROC AUC (MONAI's metric) and accuracy.

Two ways: from the predictions themselves (:func:`utility_from_predictions`, the
in-process engine, which holds every site's test set), and from counts each site
makes of its own predictions (:func:`score_histograms`, then
:func:`utility_from_histograms` on the server: the Flower engine, where no score
or label leaves a site).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Utility:
    """Test-set utility.

    Attributes:
        auc: ROC AUC (binary: of the positive class; multi-class: macro one-vs-rest);
            None when the labels hold a single class and AUC is undefined.
        accuracy: fraction of correct arg-max predictions (of voxels, for segmentation).
        n: number of test samples.
        dice: segmentation: mean over the foreground classes of their mean Dice (None otherwise).
        dice_per_class: segmentation: each foreground class's mean Dice over the images holding it.
        hd95: segmentation: mean 95th-percentile Hausdorff distance in voxels, over the (image,
            class) pairs where truth and prediction both hold the structure.
        missed_structures: segmentation: (image, class) pairs the truth holds and the prediction misses.
        spurious_structures: segmentation: (image, class) pairs the prediction holds and the truth lacks
            (a lesion found in a lesion-free image: Dice and HD95 are undefined there, so counted apart).
    """

    auc: float | None
    accuracy: float
    n: int
    dice: float | None = None
    dice_per_class: tuple[float | None, ...] | None = None
    hd95: float | None = None
    missed_structures: int | None = None
    spurious_structures: int | None = None


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, n_classes, ...) of ``model`` in eval mode, in chunks, no gradients; its mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (N, n_classes, ...) of ``model`` in eval mode (softmax over dim 1)."""
    return F.softmax(logits(model, images, batch_size), dim=1)


def utility_from_predictions(probabilities: torch.Tensor, labels: torch.Tensor) -> Utility:
    """AUC and accuracy of class ``probabilities`` (N, C) against integer ``labels`` (N,)."""
    probabilities, labels = probabilities.detach().cpu().double(), labels.detach().cpu()
    accuracy = float((probabilities.argmax(1) == labels).double().mean()) if len(labels) else float("nan")
    n_classes = probabilities.shape[1]
    if len(torch.unique(labels)) < 2:
        auc = None
    elif n_classes == 2:
        auc = float(compute_roc_auc(probabilities[:, 1], labels))
    else:
        one_hot = F.one_hot(labels, n_classes)
        present = one_hot.sum(0) > 0  # macro AUC over the classes that occur
        auc = float(compute_roc_auc(probabilities[:, present], one_hot[:, present], average="macro"))
    return Utility(auc=auc, accuracy=accuracy, n=len(labels))


# --- Pooled utility from per-site counts (the Flower engine: no score or label leaves a site) ---
#
# A site summarises its test predictions as counts: for each scored class c, how many of its
# images have the score p_c in each fixed bin, split by whether the image is labelled c; the
# confusion matrix of its arg-max predictions; and the exact Mann-Whitney count of its own
# (positive, negative) pairs. The server pools the sites' counts into the AUC and the accuracy.
#
# Bins are uniform in logit(p) = log(p / (1 - p)), because probabilities pile up near 0 and 1
# where a uniform grid in p would lump them: width 2**-10 on [-16, 16) (every p a model is not
# sure of) and 2**-4 on the saturated tails [-112, -16) and [16, 32). The first bin also holds
# p = 0 and the last p = 1. A float32 probability's logit is -inf, +inf or in [-103.3, 16.7],
# so a float32 p = 0 or p = 1 has a bin of its own. The edges are binary fractions (exact).
#
# The error bound. Bins are monotone in p, so the pooled Mann-Whitney count is exact except
# for pairs of one site's positive and another site's negative in the same bin, which count
# 1/2 whatever their order (a site's own pairs are counted exactly, from its exact scores):
# |AUC from counts - exact AUC| <= auc_error_bound(), half those pairs over all pairs, for
# any scores. How many pairs share a bin depends on the scores, not on the bins alone: about
# the bin width times the overlap of the two classes' densities in logit, so nearly constant
# outputs (an untrained model) are the hard case, and one such pair moves the AUC by
# 1/(2 P N), more than 0.001 when P N < 500 (20 test images per site). Measured
# (tests/fedsecure/test_score_histograms.py; 1500 draws each of 2 to 4 sites of 150 to 600
# images, 2 to 4 classes): largest error 3.5e-4 on model-like scores (logit spread 0.05 to 4),
# 3.9e-5 on saturated ones (float32 0s and 1s, logits tens apart). Each histogram is
# SCORE_BINS int32 counts (138 KB), one pair per scored class.
_SCORE_EDGES = np.concatenate([
    np.arange(-112.0, -16.0, 2.0**-4), np.arange(-16.0, 16.0, 2.0**-10), np.arange(16.0, 32.0, 2.0**-4),
])
SCORE_BINS = len(_SCORE_EDGES)
"""Number of score bins of each histogram (34560)."""


@dataclass(frozen=True)
class ScoreHistograms:
    """One site's test predictions as counts: what it sends instead of its scores and labels.

    The scored classes are class 1 for a binary task (the AUC is class 1's) and every
    class otherwise (macro one-vs-rest); ``k`` indexes them (see :func:`scored_classes`).
    Every array has a fixed shape that depends only on the number of classes, never on
    the number of test images.

    Attributes:
        positive_counts: int32 (K, SCORE_BINS): of the images labelled with scored class
            ``k``, how many have their score for that class in each bin.
        negative_counts: int32 (K, SCORE_BINS): the same, of the images labelled otherwise.
        twice_mann_whitney: int64 (K,): twice the Mann-Whitney count of the site's own
            (positive, negative) pairs for scored class ``k`` (pairs its exact scores order
            correctly, ties counting 1/2); it makes the site's own AUC exact.
        confusion: int64 (C, C): images of true class ``i`` whose arg-max prediction is ``j``.
    """

    positive_counts: np.ndarray
    negative_counts: np.ndarray
    twice_mann_whitney: np.ndarray
    confusion: np.ndarray

    def __post_init__(self) -> None:
        n_classes = self.confusion.shape[0] if self.confusion.ndim == 2 else 0
        if n_classes < 2:
            raise ValueError(
                f"score histograms: a confusion matrix of shape {self.confusion.shape}, not C x C with C >= 2"
            )
        scored = len(scored_classes(n_classes))
        shapes = {
            "positive_counts": (self.positive_counts.shape, (scored, SCORE_BINS)),
            "negative_counts": (self.negative_counts.shape, (scored, SCORE_BINS)),
            "twice_mann_whitney": (self.twice_mann_whitney.shape, (scored,)),
            "confusion": (self.confusion.shape, (n_classes, n_classes)),
        }
        for name, (shape, expected) in shapes.items():
            if shape != expected:
                raise ValueError(
                    f"score histograms: {name} has shape {shape}, expected {expected} for {n_classes} classes"
                )

    @property
    def n_classes(self) -> int:
        """Number of classes of the model."""
        return int(self.confusion.shape[0])

    @property
    def n(self) -> int:
        """Number of test images counted."""
        return int(self.confusion.sum())

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays by field name (what a site sends)."""
        return {name: getattr(self, name) for name in ARRAY_NAMES}


ARRAY_NAMES = ("positive_counts", "negative_counts", "twice_mann_whitney", "confusion")
"""The arrays of :class:`ScoreHistograms`, by name."""


def scored_classes(n_classes: int) -> list[int]:
    """The classes whose AUC counts: class 1 for a binary task, every class otherwise."""
    return [1] if n_classes == 2 else list(range(n_classes))


def score_bins(scores: np.ndarray) -> np.ndarray:
    """The bin of each probability in ``scores`` (monotone: a larger score never gets a lower bin)."""
    scores = np.asarray(scores, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logit = np.log(scores) - np.log1p(-scores)  # -inf at 0, +inf at 1; both monotone in p
    return np.clip(np.searchsorted(_SCORE_EDGES, logit, side="right") - 1, 0, SCORE_BINS - 1)


def score_histograms(probabilities: torch.Tensor, labels: torch.Tensor, n_classes: int) -> ScoreHistograms:
    """Summarise class ``probabilities`` (N, C) and integer ``labels`` (N,) as counts (a site's side).

    Raises:
        ValueError: ``probabilities`` do not have ``n_classes`` columns, or the labels are not in range.
    """
    probabilities = probabilities.detach().cpu().double().numpy()
    labels = labels.detach().cpu().numpy().astype(np.int64).reshape(-1)
    if probabilities.ndim != 2 or probabilities.shape != (len(labels), n_classes) or n_classes < 2:
        raise ValueError(
            f"probabilities of shape {probabilities.shape} for {len(labels)} labels and {n_classes} classes"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels outside 0..{n_classes - 1}")
    classes = scored_classes(n_classes)
    positive = np.zeros((len(classes), SCORE_BINS), dtype=np.int32)
    negative = np.zeros((len(classes), SCORE_BINS), dtype=np.int32)
    twice_u = np.zeros(len(classes), dtype=np.int64)
    for k, c in enumerate(classes):
        is_c = labels == c
        bins = score_bins(probabilities[:, c])
        positive[k] = np.bincount(bins[is_c], minlength=SCORE_BINS)
        negative[k] = np.bincount(bins[~is_c], minlength=SCORE_BINS)
        twice_u[k] = _twice_mann_whitney(probabilities[:, c], is_c)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    # The same arg-max as utility_from_predictions (on float64; ties go to the first class).
    np.add.at(confusion, (labels, probabilities.argmax(1) if len(labels) else labels), 1)
    return ScoreHistograms(positive, negative, twice_u, confusion)


def utility_from_histograms(sites: Sequence[ScoreHistograms]) -> Utility:
    """The utility of the sites' test sets pooled, from their counts (the server's side).

    The accuracy is exact. The AUC is what :func:`utility_from_predictions` gives on the
    pooled probabilities and labels (binary: class 1's; otherwise the macro one-vs-rest
    mean over the classes present), except for pairs of one site's positive and another
    site's negative whose scores share a bin: those count 1/2 whatever their order. So a
    single site's AUC is exact, and the pooled one is off by at most
    :func:`auc_error_bound` (half those pairs over all pairs); with bins 2**-10 wide in
    logit it stays within 0.001 on model-like and saturated scores of a hundred and more
    test images per site (measured: at most 3.5e-4; see the comment on the bins), not
    on a handful, where a single such pair moves it by 1/(2 P N).

    Raises:
        ValueError: no sites, or sites of different numbers of classes.
    """
    classes, present, n, confusion = _pooled(sites)
    accuracy = float(np.trace(confusion) / n) if n else float("nan")
    if present.sum() < 2:
        return Utility(auc=None, accuracy=accuracy, n=n)
    aucs = []
    for k, positive, negative in _present_classes(sites, classes, present):
        # Each site's own pairs exactly; the binned count only for pairs across sites.
        twice_u = _twice_binned_mann_whitney(positive, negative) + sum(
            int(s.twice_mann_whitney[k])
            - _twice_binned_mann_whitney(s.positive_counts[k].astype(np.int64), s.negative_counts[k].astype(np.int64))
            for s in sites
        )
        aucs.append(twice_u / (2 * int(positive.sum()) * int(negative.sum())))
    return Utility(auc=float(np.mean(aucs)), accuracy=accuracy, n=n)


def auc_error_bound(sites: Sequence[ScoreHistograms]) -> float | None:
    """How far :func:`utility_from_histograms`'s AUC can be from the exact one (None: no AUC).

    Per scored class, half the pairs of one site's positive and another site's negative
    whose scores share a bin, over all (positive, negative) pairs; the macro mean of those.
    """
    classes, present, _, _ = _pooled(sites)
    if present.sum() < 2:
        return None
    bounds = []
    for k, positive, negative in _present_classes(sites, classes, present):
        shared = int((positive * negative).sum()) - sum(
            int((s.positive_counts[k].astype(np.int64) * s.negative_counts[k]).sum()) for s in sites
        )
        bounds.append(shared / (2 * int(positive.sum()) * int(negative.sum())))
    return float(np.mean(bounds))


def _present_classes(
    sites: Sequence[ScoreHistograms], classes: list[int], present: np.ndarray
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """For each scored class that occurs: its index and the sites' pooled positive and negative counts."""
    for k, c in enumerate(classes):
        if present[c]:
            yield (k, sum(s.positive_counts[k].astype(np.int64) for s in sites),
                   sum(s.negative_counts[k].astype(np.int64) for s in sites))


def _pooled(sites: Sequence[ScoreHistograms]) -> tuple[list[int], np.ndarray, int, np.ndarray]:
    if not sites:
        raise ValueError("no score histograms to pool")
    if len({s.n_classes for s in sites}) != 1:
        raise ValueError(f"score histograms of different numbers of classes: {sorted({s.n_classes for s in sites})}")
    confusion = sum(s.confusion.astype(np.int64) for s in sites)
    return scored_classes(sites[0].n_classes), confusion.sum(1) > 0, int(confusion.sum()), confusion


def _twice_mann_whitney(scores: np.ndarray, positive: np.ndarray) -> int:
    """Twice the Mann-Whitney U of the positives' ``scores`` against the others' (ties 1/2), exactly."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    twice_rank = 2 * np.cumsum(counts) - counts + 1  # twice the mean 1-based rank of each distinct score
    n_positive = int(positive.sum())
    return int(twice_rank[inverse[positive]].sum()) - n_positive * (n_positive + 1)


def _twice_binned_mann_whitney(positive: np.ndarray, negative: np.ndarray) -> int:
    """Twice the Mann-Whitney U of binned counts: a positive beats the negatives in lower bins, ties its own."""
    below = np.cumsum(negative) - negative
    return int((positive * (2 * below + negative)).sum())
