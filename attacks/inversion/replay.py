"""Differentiable replay of a site's local training on candidate images.

An inversion searches for images whose gradient (or FedAvg update) matches
the observed one, so the site's computation must be replayed as a function of
the images, differentiably. The replay is functional (``torch.func``): the
observed model's weights are passed in, never modified, and ``vmap`` runs
many candidates (restarts, and observations of the same model) as one
batched computation, which is what keeps a GPU busy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, replace_all_batch_norm_modules_, vmap
from torch.nn import functional as F

from attacks.inversion.observation import LocalSteps

Tensors = dict[str, torch.Tensor]


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against label distributions (one-hot labels give ``F.cross_entropy``).

    Classes are dim 1: (N, C) per image, or (N, C, *spatial) per pixel (the mean over pixels too).
    """
    return -(soft_labels * F.log_softmax(logits, dim=1)).sum(1).mean()


def soft_dice_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """MONAI's ``DiceCELoss(to_onehot_y=True, softmax=True)`` against per-pixel label distributions.

    Dice per (image, class) on the softmax, smoothing 1e-5, averaged, plus the mean
    cross-entropy; one-hot labels give MONAI's value (a test checks it).
    """
    probabilities = torch.softmax(logits, dim=1)
    spatial = tuple(range(2, logits.dim()))
    intersection = (probabilities * soft_labels).sum(spatial)
    denominator = probabilities.sum(spatial) + soft_labels.sum(spatial)
    dice = 1.0 - (2.0 * intersection + 1e-5) / (denominator + 1e-5)
    return dice.mean() + soft_cross_entropy(logits, soft_labels)


@dataclass(frozen=True)
class ReplayLoss:
    """A site's training loss as a replay computes it on soft labels.

    Attributes:
        function: (logits, soft labels) -> the mean loss.
        dense: whether a label is a map over the image's pixels (one soft label per pixel).
    """

    function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    dense: bool


#: The training losses a replay knows, by :attr:`Observation.loss` name.
LOSSES = {
    "cross_entropy": ReplayLoss(soft_cross_entropy, dense=False),
    "dice_cross_entropy": ReplayLoss(soft_dice_cross_entropy, dense=True),
}


class LocalTrainingReplay:
    """Replays local SGD of one model architecture, as a function of images.

    Args:
        model: the observed model. A private copy is used; BatchNorm layers in
            it use batch statistics (training mode) without tracking running
            statistics, as ``torch.func`` requires.
        names: the parameters that were shared (those the update holds).
        loss: the site's training loss (a name in :data:`LOSSES`).
    """

    def __init__(self, model: nn.Module, names: list[str], loss: str = "cross_entropy") -> None:
        self.model = replace_all_batch_norm_modules_(copy.deepcopy(model)).train()
        self.loss_function = LOSSES[loss].function
        parameters = dict(self.model.named_parameters())
        self.names = list(names)
        # Parameters not in the update were not shared; they take part in the forward pass, frozen.
        self.frozen = {n: p.detach() for n, p in parameters.items() if n not in self.names}
        self.frozen.update({n: b.detach() for n, b in self.model.named_buffers()})

    def loss(self, params: Tensors, images: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
        """The site's mean loss of the model with ``params`` on one batch."""
        logits = functional_call(self.model, {**self.frozen, **params}, (images,))
        return self.loss_function(logits, soft_labels)

    def gradient(self, params: Tensors, images: torch.Tensor, soft_labels: torch.Tensor) -> Tensors:
        """Gradient of the mean loss over ``images`` with respect to ``params`` (differentiable in images)."""
        return grad(self.loss)(params, images, soft_labels)

    def update(self, params: Tensors, images: torch.Tensor, soft_labels: torch.Tensor, training: LocalSteps) -> Tensors:
        """The change of ``params`` after the site's local SGD on (images, labels), unrolled.

        The true batch order is the site's secret; the replay assumes one fixed
        partition for every epoch. With one batch per epoch (a site holding one
        batch, or FedSGD) that is exact.
        """
        current = dict(params)
        batches = training.batches(images.shape[0])
        for _ in range(training.epochs):
            for batch in batches:
                step = self.gradient(current, images[batch], soft_labels[batch])
                current = {n: current[n] - training.lr * step[n] for n in current}
        return {n: current[n] - params[n] for n in current}

    def batched(self, function: Callable[..., Tensors]) -> Callable[..., Tensors]:
        """``function`` over a leading candidate dimension of params, images and labels."""
        return vmap(function, in_dims=(0, 0, 0))


def flatten(values: Tensors, names: list[str]) -> torch.Tensor:
    """Concatenate per-parameter tensors with a leading batch dimension into (batch, numel)."""
    return torch.cat([values[n].flatten(1) for n in names], dim=1)
