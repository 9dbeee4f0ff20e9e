"""Segmentation: an integer mask per image; MONAI's DiceCE loss, Dice per class and HD95.

Labels are int64 masks (N, H, W) or (N, D, H, W) with values ``0..C-1`` (0 the
background); a model gives C logits per pixel, (N, C, H, W) or (N, C, D, H, W).

Metrics (MONAI's, as a class and function pair): Dice per foreground class per image
(``DiceMetric``; an image whose truth lacks a class does not count for that class),
the mean over images per class, and the utility's ``dice`` is the mean over the
foreground classes; HD95 (``compute_hausdorff_distance``, 95th percentile, in
voxels) averages over the (image, class) pairs where both the truth and the
prediction hold the structure (elsewhere it is undefined); ``missed_structures``
counts the pairs whose truth holds the structure but the prediction does not, and
``spurious_structures`` those whose prediction holds one the truth lacks.

A membership attack reads one number per image off a dense output: the mean over
its voxels of LiRA's logit-scaled confidence of the true class, with the
structure's voxels and the background's weighted equally (the background is most
of an image and is fitted by every model; the structure is what a model learns
its training images by; He et al. 2020, "Segmentations-Leak", read the loss map).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedsecure.errors import NotSupportedError
from fedsecure.fl.evaluation import Utility
from fedsecure.fl.task import TASKS, Task


def one_hot_masks(masks: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Integer masks (N, *spatial) as one-hot (N, C, *spatial) floats."""
    return F.one_hot(masks.long(), n_classes).movedim(-1, 1).float()


def dice_per_image(predicted: torch.Tensor, truth: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Dice of each foreground class in each image (N, C-1); NaN where the truth lacks the class.

    Args:
        predicted: integer masks (N, *spatial).
        truth: integer masks (N, *spatial).
        n_classes: classes, background included.
    """
    from monai.metrics import DiceMetric

    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return metric(one_hot_masks(predicted, n_classes), one_hot_masks(truth, n_classes)).double()


def hausdorff95_per_image(predicted: torch.Tensor, truth: torch.Tensor, n_classes: int) -> torch.Tensor:
    """HD95 in voxels of each foreground class in each image (N, C-1); NaN/inf where either lacks the class."""
    from monai.metrics import compute_hausdorff_distance

    with warnings.catch_warnings():  # MONAI warns on every empty structure; those pairs are counted apart
        warnings.simplefilter("ignore")
        return compute_hausdorff_distance(
            one_hot_masks(predicted, n_classes), one_hot_masks(truth, n_classes), include_background=False,
            percentile=95,
        ).double()


def segmentation_utility(predicted: torch.Tensor, truth: torch.Tensor, n_classes: int) -> Utility:
    """Dice per class and their mean, HD95 and voxel accuracy of ``predicted`` masks against ``truth``."""
    predicted, truth = predicted.detach().cpu(), truth.detach().cpu()
    n = len(truth)
    accuracy = float((predicted == truth).double().mean()) if n else float("nan")
    dice = dice_per_image(predicted, truth, n_classes)
    per_class = tuple(_nanmean(dice[:, c]) for c in range(n_classes - 1))
    present = [d for d in per_class if d is not None]
    hd = hausdorff95_per_image(predicted, truth, n_classes)
    truth_has = one_hot_masks(truth, n_classes)[:, 1:].flatten(2).amax(2) > 0
    predicted_has = one_hot_masks(predicted, n_classes)[:, 1:].flatten(2).amax(2) > 0
    both = truth_has & predicted_has & torch.isfinite(hd)
    return Utility(
        auc=None, accuracy=accuracy, n=n,
        dice=float(np.mean(present)) if present else None,
        dice_per_class=per_class,
        hd95=float(hd[both].mean()) if bool(both.any()) else None,
        missed_structures=int((truth_has & ~predicted_has).sum()),
        spurious_structures=int((predicted_has & ~truth_has).sum()),
    )


def _nanmean(values: torch.Tensor) -> float | None:
    finite = values[~torch.isnan(values)]
    return float(finite.mean()) if len(finite) else None


def structure_confidence(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image: the mean logit-scaled confidence of the true class, structure and background weighted equally.

    ``log p_y - log(1 - p_y) = z_y - logsumexp_{c != y} z_c`` per voxel (stable near 1), then
    the mean over the foreground voxels and the mean over the background voxels, averaged
    (the background's alone in an image without a structure).
    """
    logits = logits.double()
    index = masks.long().unsqueeze(1)
    true = logits.gather(1, index).squeeze(1)
    confidence = true - torch.logsumexp(logits.scatter(1, index, float("-inf")), dim=1)
    foreground = (masks > 0).flatten(1).double()
    confidence = confidence.flatten(1)
    n_fore, n_back = foreground.sum(1), (1 - foreground).sum(1)
    fore = (confidence * foreground).sum(1) / n_fore.clamp_min(1)
    back = (confidence * (1 - foreground)).sum(1) / n_back.clamp_min(1)
    return torch.where(n_fore > 0, torch.where(n_back > 0, 0.5 * (fore + back), fore), back)


class DiceCE(nn.Module):
    """MONAI's ``DiceCELoss`` (softmax, one-hot truth) on integer masks (N, *spatial).

    Dice is per image (``batch=False``) and the cross-entropy a mean over each image's
    voxels, so the loss is the mean over the batch of a per-image loss, as DP-SGD's
    per-sample clipping assumes. ``reduction = "none"`` gives that per-image loss (N,):
    Opacus's ghost clipping sets it to clip each image's gradient, and a loss that
    ignored it would let one image's gradient through unclipped.

    Args:
        reduction: ``"mean"`` over the batch (training) or ``"none"`` (one loss per image).
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self.reduction = reduction
        self.dice = DiceLoss(to_onehot_y=True, softmax=True, batch=False, reduction="none")

    def forward(self, outputs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The DiceCE loss of ``outputs`` (N, C, *spatial) against ``masks`` (N, *spatial), by ``reduction``."""
        dice = self.dice(outputs, masks.unsqueeze(1)).flatten(1).mean(1)  # per image: the mean over classes
        cross_entropy = F.cross_entropy(outputs, masks.long(), reduction="none").flatten(1).mean(1)
        per_image = dice + cross_entropy
        if self.reduction == "none":
            return per_image
        if self.reduction == "mean":
            return per_image.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', got {self.reduction!r}")


class Segmentation(Task):
    """An integer mask per image: DiceCE loss, Dice per class and HD95."""

    metric = "dice"
    eval_batch = 8
    masks = True
    replay_loss = "dice_cross_entropy"
    pooled_from_counts = False

    def __init__(self) -> None:
        self._loss: DiceCE | None = None

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The mean DiceCE loss (see :class:`DiceCE`)."""
        if self._loss is None:
            self._loss = DiceCE()
        return self._loss(outputs, labels)

    def criterion(self) -> nn.Module:
        """A fresh :class:`DiceCE`."""
        return DiceCE()

    def utility(self, probabilities: torch.Tensor, labels: torch.Tensor) -> Utility:
        """Dice, HD95 and voxel accuracy of the arg-max masks (:func:`segmentation_utility`)."""
        return segmentation_utility(probabilities.argmax(1), labels, probabilities.shape[1])

    def check_outputs(self, shape: tuple[int, ...], n_classes: int, image_size: tuple[int, ...], model: str) -> None:
        """A segmentation network gives ``n_classes`` logits per pixel, at the image's size."""
        expected = (1, n_classes, *image_size)
        if shape != expected:
            raise NotSupportedError(
                f"model {model!r} gives outputs of shape {shape[1:]} per image; segmentation needs "
                f"{n_classes} logits per pixel, {expected[1:]} (choose unet or segresnet)"
            )

    def recovered_label_score(self, recovered: torch.Tensor, truth: torch.Tensor, n_classes: int) -> float | None:
        """The mean Dice of recovered masks against the true ones (matched image for image)."""
        return segmentation_utility(recovered, truth, n_classes).dice

    def attack_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each image's :func:`structure_confidence` ``s`` as the two-class logits (0, s), true class 1.

        LiRA's logit-scaled confidence of class 1 is then ``s`` itself, and the loss
        ``log(1 + e^-s)``, so every membership attack runs unchanged on a dense task.
        """
        s = structure_confidence(logits, labels)
        return torch.stack([torch.zeros_like(s), s], dim=1)

    def attack_labels(self, labels: np.ndarray) -> np.ndarray:
        """Class 1 for every image (see :meth:`attack_logits`)."""
        return np.ones(len(labels), dtype=np.int64)

    def mislabel(self, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
        """Each mask replaced by another image's (a derangement): the wrong anatomy for that image.

        Two images may share a mask (both empty, say); a canary given a copy of its own is
        swapped with another until its mask differs, where any other mask does.
        """
        if len(labels) < 2:
            raise ValueError("mislabelled masks need two images or more")
        order = rng.permutation(len(labels))
        wrong = np.empty_like(labels)
        wrong[order] = labels[np.roll(order, -1)]
        for i in range(len(labels)):
            if not np.array_equal(wrong[i], labels[i]):
                continue
            for j in range(len(labels)):  # a swap that leaves both canaries with another image's mask
                if not np.array_equal(wrong[j], labels[i]) and not np.array_equal(wrong[i], labels[j]):
                    wrong[[i, j]] = wrong[[j, i]]
                    break
        return wrong


TASKS.register("segmentation")(Segmentation())

__all__ = ["DiceCE", "Segmentation", "dice_per_image", "hausdorff95_per_image", "segmentation_utility"]
