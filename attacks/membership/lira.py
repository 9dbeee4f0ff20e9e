"""LiRA, the likelihood-ratio attack (Carlini et al. 2022)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from typing_extensions import override

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.signals import scaled_confidence

_MIN_STD = 1e-4


def _gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


@MEMBERSHIP_ATTACKS.register("lira")
@dataclass
class LiRA(MembershipAttack):
    """Fits Gaussians to the logit-scaled confidence of reference models with (IN) and without (OUT) each sample.

    * online: score = log N(phi; mu_in, sigma_in) - log N(phi; mu_out, sigma_out);
    * offline (``online = False``): only OUT models are needed (they can be
      trained once, before the target exists); score = log P[N(mu_out,
      sigma_out) <= phi], a one-sided test that the target is too confident.

    Attributes:
        online: use IN and OUT models (stronger) or OUT models only.
        per_example_variance: each sample's own standard deviation (needs many
            reference models) or one standard deviation shared by all samples
            (Carlini et al.'s choice below 64 models).
    """

    online: bool = True
    per_example_variance: bool = False

    def _fit(self, references: ReferenceOutputs | None) -> None:
        assert references is not None
        phi = scaled_confidence(references.logits, references.labels.expand(references.models, -1))
        inside = references.members.bool()
        self._out_mean, self._out_std = self._gaussian(phi, ~inside)
        if self.online:
            self._in_mean, self._in_std = self._gaussian(phi, inside)

    def _gaussian(self, phi: torch.Tensor, chosen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        counts = chosen.sum(0)
        if not (counts > 0).any():
            raise ValueError("LiRA needs reference models on both sides of membership")
        values = torch.where(chosen, phi, torch.zeros_like(phi))
        global_mean = values.sum() / counts.sum()
        # A sample no reference model covers on this side falls back to the global mean.
        mean = torch.where(counts > 0, values.sum(0) / counts.clamp(min=1), global_mean)
        squares = torch.where(chosen, (phi - mean) ** 2, torch.zeros_like(phi))
        global_std = (squares.sum() / counts.sum()).sqrt().clamp(min=_MIN_STD)
        if not self.per_example_variance:
            return mean, global_std.expand_as(mean)
        std = torch.where(counts > 1, (squares.sum(0) / (counts - 1).clamp(min=1)).sqrt(), global_std)
        return mean, std.clamp(min=_MIN_STD)

    @override
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        phi = scaled_confidence(logits, labels)
        if self.online:
            return _gaussian_log_density(phi, self._in_mean, self._in_std) - _gaussian_log_density(
                phi, self._out_mean, self._out_std
            )
        return torch.special.log_ndtr((phi - self._out_mean) / self._out_std)
