"""The threat model of an inversion: what the attacker observed, and nothing else.

An honest-but-curious server sees, for one site and one round, the model it
sent and the site's plaintext update (its parameters after local training
minus the model it received). It also knows how sites train (it set the
learning rate, epochs and batch size) and, from the aggregation weight, how
many images the update came from. :class:`Observation` holds exactly that: it
has no field for images or labels, so an attack cannot be handed the ground
truth by mistake.

A gradient is the special case of one full-batch SGD step with learning rate
1: ``update = -gradient`` (:meth:`Observation.from_gradient`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class LocalSteps:
    """How the site trained, as the attacker knows it.

    Attributes:
        lr: SGD learning rate of the local steps.
        epochs: passes over the local images.
        batch_size: images per step; None for full-batch steps (FedSGD).
    """

    lr: float = 1.0
    epochs: int = 1
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")

    def batches(self, n_images: int) -> list[slice]:
        """The local steps of one epoch, as slices of the (unknown, fixed-order) images."""
        size = n_images if self.batch_size is None else min(self.batch_size, n_images)
        return [slice(start, min(start + size, n_images)) for start in range(0, n_images, size)]

    def steps(self, n_images: int) -> int:
        """Local SGD steps in all epochs."""
        return self.epochs * len(self.batches(n_images))


@dataclass(frozen=True)
class Observation:
    """One site's round as seen by the server.

    Attributes:
        model: the model the server sent the site (architecture and weights).
            Attacks never modify it.
        update: parameter name -> the site's change to that parameter (local
            minus received). Parameters missing from it were not shared.
        n_images: how many images the update came from.
        image_shape: (channels, height, width) of one image, (channels, depth, height, width) of a volume.
        n_classes: number of classes of the model's output.
        training: the site's local training, as far as the attacker knows it.
        value_range: the images' (min, max) values.
        loss: the site's training loss, by name in :data:`attacks.inversion.replay.LOSSES`:
            ``cross_entropy`` (a class per image) or ``dice_cross_entropy`` (a mask per
            image: MONAI's DiceCE, as fedsecure's segmentation task trains).
    """

    model: nn.Module
    update: dict[str, torch.Tensor]
    n_images: int
    image_shape: tuple[int, ...]
    n_classes: int
    training: LocalSteps = LocalSteps()
    value_range: tuple[float, float] = (0.0, 1.0)
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        from attacks.inversion.replay import LOSSES

        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        parameters = dict(self.model.named_parameters())
        for name, value in self.update.items():
            if name not in parameters:
                raise ValueError(f"update names {name!r}, which is not a parameter of the model")
            if value.shape != parameters[name].shape:
                raise ValueError(
                    f"update of {name!r} has shape {tuple(value.shape)}, the parameter {tuple(parameters[name].shape)}"
                )
        if not self.update:
            raise ValueError("the update is empty: there is nothing to invert")
        low, high = self.value_range
        if not high > low:
            raise ValueError(f"value_range must have max > min, got {self.value_range}")

    @classmethod
    def from_gradient(
        cls,
        model: nn.Module,
        gradient: dict[str, torch.Tensor],
        n_images: int,
        image_shape: tuple[int, ...],
        n_classes: int,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> Observation:
        """An observed gradient of the mean loss over ``n_images`` (FedSGD, or a shared gradient)."""
        return cls(
            model=model, update={name: -g for name, g in gradient.items()}, n_images=n_images,
            image_shape=image_shape, n_classes=n_classes, training=LocalSteps(lr=1.0), value_range=value_range,
        )

    @property
    def label_shape(self) -> tuple[int, ...]:
        """The spatial shape of one label: () for a class, the image's for a mask (a dense loss)."""
        from attacks.inversion.replay import LOSSES

        return tuple(self.image_shape[1:]) if LOSSES[self.loss].dense else ()

    @property
    def local_steps(self) -> int:
        """Number of local SGD steps behind the update."""
        return self.training.steps(self.n_images)

    def pseudo_gradient(self) -> dict[str, torch.Tensor]:
        """``-update / (lr * steps)``: the mean gradient over the local steps (exact for one step)."""
        scale = -1.0 / (self.training.lr * self.local_steps)
        return {name: value * scale for name, value in self.update.items()}

    @property
    def numel(self) -> int:
        """Number of observed values."""
        return sum(math.prod(v.shape) for v in self.update.values())
