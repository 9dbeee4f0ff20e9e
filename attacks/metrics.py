"""How much an attack recovered: image-reconstruction and membership-inference metrics.

Membership: AUC (MONAI's), TPR at fixed low FPRs with Clopper-Pearson
intervals, attacker advantage and the ROC curve for a log-log plot
(:func:`membership_scores`).

Reconstruction:

Reconstructions come back in arbitrary order (an attack on a batch cannot know
which slot held which image), so every score is computed after a best-match
assignment between reconstructions and true images (the Hungarian algorithm
on pairwise MSE). PSNR, SSIM and MSE are MONAI's metrics.

A raw score says little on its own: chest X-rays look alike, and the mean
image of public data already scores about 19 dB against any one of them.
:func:`score_reconstruction` therefore scores the attacker's *prior image*
against the same truth, and the gain of the reconstruction over the prior is
the leakage (the relative leakage of Hatamizadeh et al. 2023 uses the SSIM
gain).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.metrics import MSEMetric, PSNRMetric, SSIMMetric, compute_roc_auc
from scipy.optimize import linear_sum_assignment

from attacks.auditing import clopper_pearson


def pairwise_mse(candidates: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """MSE between every candidate and every true image: (len(candidates), len(truth))."""
    return (candidates.flatten(1)[:, None, :] - truth.flatten(1)[None, :, :]).pow(2).mean(-1)


def best_match(candidates: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """For each true image, the index of the candidate assigned to it (minimum total MSE).

    Args:
        candidates: (N, C, H, W) reconstructions.
        truth: (N, C, H, W) true images.
    """
    if candidates.shape != truth.shape:
        raise ValueError(f"candidates {tuple(candidates.shape)} and truth {tuple(truth.shape)} differ in shape")
    cost = pairwise_mse(candidates.detach().double().cpu(), truth.detach().double().cpu()).T
    truth_index, candidate_index = linear_sum_assignment(cost.numpy())
    order = torch.empty(len(truth), dtype=torch.long)
    order[torch.as_tensor(truth_index)] = torch.as_tensor(candidate_index)
    return order


def _window(images: torch.Tensor) -> int:
    # MONAI's default 11-pixel window, shrunk (odd) for images smaller than it.
    side = min(images.shape[2:])
    return min(11, side if side % 2 else side - 1)


def image_scores(reconstructed: torch.Tensor, truth: torch.Tensor, data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image MSE, PSNR (dB) and SSIM of aligned pairs (no matching).

    Args:
        reconstructed: (N, C, H, W) images or (N, C, D, H, W) volumes, compared pairwise with ``truth``.
        truth: the same shape.
        data_range: the images' value range (max - min).

    Returns:
        ``{"mse", "psnr", "ssim"}``, each a float tensor of N values.
    """
    pred, target = reconstructed.detach().float().cpu(), truth.detach().float().cpu()
    ssim = SSIMMetric(spatial_dims=target.dim() - 2, data_range=data_range, win_size=_window(target), reduction="none")
    return {
        "mse": _flat(MSEMetric(reduction="none")(pred, target)),
        "psnr": _flat(PSNRMetric(max_val=data_range, reduction="none")(pred, target)),
        "ssim": _flat(ssim(pred, target)),
    }


def _flat(values: torch.Tensor | Sequence[Any]) -> torch.Tensor:
    # MONAI's metrics are typed to return a tensor or a sequence; on tensors they return a tensor.
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"expected a tensor of per-image values, got {type(values).__name__}")
    return values.flatten()


@dataclass(frozen=True)
class ReconstructionScores:
    """An inversion's success, image by image, beside the attacker's prior image.

    Attributes:
        psnr, ssim, mse: per true image, for its matched reconstruction.
        prior_psnr, prior_ssim, prior_mse: per true image, for the prior image.
        label_accuracy: fraction of true labels recovered (as a multiset:
            order-free, so a batch's labels count however they were assigned).
        order: for each true image, the index of its matched reconstruction.
    """

    psnr: list[float]
    ssim: list[float]
    mse: list[float]
    prior_psnr: list[float]
    prior_ssim: list[float]
    prior_mse: list[float]
    label_accuracy: float
    order: list[int]

    @classmethod
    def concatenate(cls, scores: list[ReconstructionScores]) -> ReconstructionScores:
        """One score set over several attacked batches (each matched within its own batch)."""
        offsets = [sum(len(s.psnr) for s in scores[:i]) for i in range(len(scores))]
        total = sum(len(s.psnr) for s in scores)
        return cls(
            psnr=[v for s in scores for v in s.psnr],
            ssim=[v for s in scores for v in s.ssim],
            mse=[v for s in scores for v in s.mse],
            prior_psnr=[v for s in scores for v in s.prior_psnr],
            prior_ssim=[v for s in scores for v in s.prior_ssim],
            prior_mse=[v for s in scores for v in s.prior_mse],
            label_accuracy=sum(s.label_accuracy * len(s.psnr) for s in scores) / total,
            order=[o + offset for s, offset in zip(scores, offsets, strict=True) for o in s.order],
        )

    @staticmethod
    def _median(values: list[float]) -> float:
        # statistics.median averages the two middle values; torch.median would return the lower one.
        return float(statistics.median(values)) if values else float("nan")

    @property
    def psnr_median(self) -> float:
        """Median PSNR (dB) over images."""
        return self._median(self.psnr)

    @property
    def psnr_worst_case(self) -> float:
        """The best-reconstructed image's PSNR: the worst case for the patient."""
        return max(self.psnr)

    @property
    def ssim_median(self) -> float:
        """Median SSIM over images."""
        return self._median(self.ssim)

    @property
    def ssim_worst_case(self) -> float:
        """The highest SSIM over images: the worst case for the patient."""
        return max(self.ssim)

    @property
    def prior_psnr_median(self) -> float:
        """Median PSNR of the prior image (what the attacker had before)."""
        return self._median(self.prior_psnr)

    @property
    def prior_ssim_median(self) -> float:
        """Median SSIM of the prior image."""
        return self._median(self.prior_ssim)

    @property
    def psnr_gain_median(self) -> float:
        """Median over images of PSNR gain over the prior (dB): the leakage."""
        return self._median([r - p for r, p in zip(self.psnr, self.prior_psnr, strict=True)])

    @property
    def relative_leakage(self) -> float:
        """Median SSIM gain over the prior image (Hatamizadeh et al. 2023); <= 0: nothing leaked."""
        return self._median([r - p for r, p in zip(self.ssim, self.prior_ssim, strict=True)])


def label_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> float:
    """Fraction of true labels recovered, compared as multisets (order-free)."""
    if len(truth) == 0:
        return float("nan")
    predicted_counts = torch.bincount(predicted.cpu().long(), minlength=1)
    true_counts = torch.bincount(truth.cpu().long(), minlength=1)
    size = max(len(predicted_counts), len(true_counts))
    common = torch.minimum(
        torch.nn.functional.pad(predicted_counts, (0, size - len(predicted_counts))),
        torch.nn.functional.pad(true_counts, (0, size - len(true_counts))),
    )
    return float(common.sum()) / len(truth)


def score_reconstruction(
    reconstructed: torch.Tensor,
    reconstructed_labels: torch.Tensor,
    truth: torch.Tensor,
    true_labels: torch.Tensor,
    prior: torch.Tensor,
    data_range: float = 1.0,
) -> ReconstructionScores:
    """Score a reconstruction against the truth, next to the attacker's prior image.

    This is analysis, done by the auditor who holds the truth; the attack never
    sees it.

    Args:
        reconstructed: (N, C, H, W) reconstructions, in any order.
        reconstructed_labels: (N,) recovered labels, or (N, *spatial) recovered masks.
        truth: (N, C, H, W) the images the site trained on.
        true_labels: (N,) their labels, or (N, *spatial) their masks.
        prior: (C, H, W) the attacker's best guess before the attack (e.g. the
            mean of public images).
        data_range: the images' value range.
    """
    order = best_match(reconstructed, truth)
    matched = reconstructed.detach().cpu()[order]
    scores = image_scores(matched, truth, data_range)
    prior_scores = image_scores(prior.detach().cpu().expand_as(truth).contiguous(), truth, data_range)
    return ReconstructionScores(
        psnr=scores["psnr"].tolist(),
        ssim=scores["ssim"].tolist(),
        mse=scores["mse"].tolist(),
        prior_psnr=prior_scores["psnr"].tolist(),
        prior_ssim=prior_scores["ssim"].tolist(),
        prior_mse=prior_scores["mse"].tolist(),
        label_accuracy=(
            label_accuracy(reconstructed_labels, true_labels) if true_labels.dim() == 1
            # Masks: the fraction of pixels whose class the matched reconstruction recovered.
            else float((reconstructed_labels.cpu()[order] == true_labels.cpu()).double().mean())
        ),
        order=order.tolist(),
    )


# Membership inference ------------------------------------------------------------------------

#: The false-positive rates at which membership attacks are reported (Carlini et al. 2022:
#: an attack matters when it identifies some members with near-certainty, not on average).
FPR_LEVELS = (0.01, 0.001, 0.0001)


@dataclass(frozen=True)
class RateAt:
    """A true-positive rate at a fixed false-positive rate, with its Clopper-Pearson interval.

    Attributes:
        fpr: the target false-positive rate.
        tpr: the true-positive rate at the threshold reaching at most ``fpr``.
        low, high: the interval on ``tpr`` (members are the trials).
        achieved_fpr: the false-positive rate actually reached at that threshold.
        fpr_high: the upper end of the interval on the achieved FPR (non-members
            are the trials): what the sample can vouch for.
        resolved: whether there are enough non-members (at least ``1 / fpr``)
            for one false positive at ``fpr``; if not, ``tpr`` is the TPR at
            zero false positives and does not show the rate at ``fpr``.
    """

    fpr: float
    tpr: float
    low: float
    high: float
    achieved_fpr: float
    fpr_high: float
    resolved: bool


@dataclass(frozen=True)
class MembershipScores:
    """How well an attack's scores separate members from non-members.

    Attributes:
        auc: area under the ROC curve (MONAI's ``compute_roc_auc``).
        tpr_at_fpr: one :class:`RateAt` per level of :data:`FPR_LEVELS` down to
            the first the number of non-members cannot resolve (which is kept,
            marked unresolved: the TPR at zero false positives).
        advantage: ``max(TPR - FPR)`` over thresholds (Yeom et al. 2018).
        roc_fpr, roc_tpr: the ROC curve, thinned to at most ~200 points spread
            evenly on a log FPR axis (for a log-log plot).
        members, non_members: the sample counts.
    """

    auc: float
    tpr_at_fpr: dict[str, RateAt]
    advantage: float
    roc_fpr: list[float]
    roc_tpr: list[float]
    members: int
    non_members: int


def roc_curve(scores: torch.Tensor, members: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(fpr, tpr, thresholds) at every distinct score, thresholds descending; ``score >= threshold`` is "member"."""
    scores, members = scores.double().cpu(), members.bool().cpu()
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores, sorted_members = scores[order], members[order]
    true_positives = torch.cumsum(sorted_members.double(), 0)
    false_positives = torch.cumsum((~sorted_members).double(), 0)
    # keep the last index of each run of equal scores: a threshold admits all ties
    last = torch.ones(len(scores), dtype=torch.bool)
    last[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    positives, negatives = max(int(members.sum()), 1), max(int((~members).sum()), 1)
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), false_positives[last] / negatives])
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), true_positives[last] / positives])
    thresholds = torch.cat([torch.tensor([math.inf], dtype=torch.float64), sorted_scores[last]])
    return fpr, tpr, thresholds


def tpr_at_fpr(scores: torch.Tensor, members: torch.Tensor, fpr_level: float, confidence: float = 0.95) -> RateAt:
    """The TPR at the most permissive threshold whose FPR is at most ``fpr_level``, with its interval."""
    fpr, tpr, _ = roc_curve(scores, members)
    allowed = torch.nonzero(fpr <= fpr_level + 1e-12).max()
    positives, negatives = int(members.bool().sum()), int((~members.bool()).sum())
    true_positives = int(round(float(tpr[allowed]) * positives))
    false_positives = int(round(float(fpr[allowed]) * negatives))
    low, high = clopper_pearson(true_positives, positives, confidence)
    return RateAt(
        fpr=fpr_level, tpr=float(tpr[allowed]), low=low, high=high, achieved_fpr=float(fpr[allowed]),
        fpr_high=clopper_pearson(false_positives, negatives, confidence)[1], resolved=negatives * fpr_level >= 1,
    )


def membership_scores(scores: torch.Tensor, members: torch.Tensor, confidence: float = 0.95) -> MembershipScores:
    """AUC, TPR at the fixed FPR levels (with intervals), advantage and the ROC curve of an attack's scores.

    Args:
        scores: (N,) attack scores; higher means "more likely a member".
        members: (N,) the truth (held by the auditor, never the attack).
        confidence: coverage of the Clopper-Pearson intervals.
    """
    scores, members = torch.as_tensor(scores).double().cpu(), torch.as_tensor(members).bool().cpu()
    n_members, n_non = int(members.sum()), int((~members).sum())
    if n_members == 0 or n_non == 0:
        raise ValueError("membership metrics need both members and non-members")
    fpr, tpr, _ = roc_curve(scores, members)
    levels = {}
    for level in FPR_LEVELS:
        levels[f"{level:g}"] = tpr_at_fpr(scores, members, level, confidence)
        if n_non * level < 1:
            break  # lower levels would repeat the TPR at zero false positives
    keep = _log_spaced(fpr)
    return MembershipScores(
        auc=_roc_auc(scores, members),
        tpr_at_fpr=levels,
        advantage=float((tpr - fpr).max()),
        roc_fpr=fpr[keep].tolist(),
        roc_tpr=tpr[keep].tolist(),
        members=n_members,
        non_members=n_non,
    )


def _roc_auc(scores: torch.Tensor, members: torch.Tensor) -> float:
    auc = compute_roc_auc(scores, members.long())
    # One column of scores gives one AUC; MONAI types the result as any array-like.
    if not isinstance(auc, float):
        raise TypeError(f"expected one AUC, got {type(auc).__name__}")
    return auc


def _log_spaced(fpr: torch.Tensor, points: int = 200) -> torch.Tensor:
    """Indices of ROC points spread evenly in log FPR (always the ends)."""
    if len(fpr) <= points:
        return torch.arange(len(fpr))
    positive = fpr[fpr > 0]
    grid = torch.logspace(math.log10(float(positive.min())), 0, points, dtype=torch.float64)
    chosen = torch.searchsorted(fpr.contiguous(), grid).clamp(max=len(fpr) - 1)
    return torch.unique(torch.cat([torch.tensor([0, len(fpr) - 1]), chosen]))
