"""The interface every gradient-inversion attack implements, and their registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from attacks.inversion.observation import Observation
from fedsecure.registry import Registry


@dataclass(frozen=True)
class Reconstruction:
    """What an attack produced for one observation.

    Attributes:
        images: (n_images, C, H, W) reconstructed images, in the value range,
            in no particular order.
        labels: (n_images,) recovered labels.
        objective: the attack's final matching loss for the kept restart
            (lower is a closer match to what was observed).
        iterations: optimizer iterations run.
        seconds: wall time of the attack for its whole group of observations.
    """

    images: torch.Tensor
    labels: torch.Tensor
    objective: float
    iterations: int
    seconds: float


class InversionAttack(ABC):
    """Rebuilds a site's training images from what the server observed.

    Attacks receive :class:`Observation` objects, which hold no images or
    labels, and optionally images the attacker already holds (public data).
    """

    #: The options an audit uses where its spec sets none (the class's own defaults follow the paper).
    audit_defaults: ClassVar[Mapping[str, Any]] = {}

    def prior_description(self, public_images: torch.Tensor | None) -> str:
        """What the attack knew of images before it looked (its image prior), in words, for the report."""
        return "none beyond the value range"

    def reconstruct(self, observation: Observation, public_images: torch.Tensor | None = None) -> Reconstruction:
        """Reconstruct the images behind one observation."""
        return self.reconstruct_all([observation], public_images)[0]

    @abstractmethod
    def reconstruct_all(
        self, observations: Sequence[Observation], public_images: torch.Tensor | None = None
    ) -> list[Reconstruction]:
        """Reconstruct several observations (batched together where they share a shape).

        Args:
            observations: what the server saw, one per site message.
            public_images: (M, C, H, W) images the attacker holds (not the site's),
                used only for prior estimates such as the model's mean prediction.

        Returns:
            One reconstruction per observation, in order.
        """


INVERSION_ATTACKS: Registry[type[InversionAttack]] = Registry("inversion attack")
