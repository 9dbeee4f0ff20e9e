"""RMIA, the robust membership inference attack (Zarifzadeh et al. 2024), offline."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing_extensions import override

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.signals import true_class_probability


@MEMBERSHIP_ATTACKS.register("rmia")
@dataclass
class RMIA(MembershipAttack):
    """Compares each sample's likelihood ratio with those of population samples.

    ``ratio(x) = Pr(x | target) / Pr(x)``, with ``Pr(x)`` the average over
    reference models. Offline (OUT models only), ``Pr(x) = ((1 + a) Pr_out(x)
    + (1 - a)) / 2``: the paper's linear correction for the missing IN models.
    Score = the fraction of population samples z with ``ratio(x) / ratio(z) >=
    gamma``. The population is the candidate pool itself (the attacker's own
    data; whether a z was a member does not matter to the test).

    Attributes:
        offline_a: the offline correction ``a`` (0.3 in the paper's CIFAR setting).
        gamma: the likelihood-ratio threshold against each z.
    """

    offline_a: float = 0.3
    gamma: float = 1.0

    def _fit(self, references: ReferenceOutputs | None) -> None:
        assert references is not None
        probabilities = true_class_probability(references.logits, references.labels.expand(references.models, -1))
        out = ~references.members.bool()
        counts = out.sum(0)
        if not (counts > 0).all():
            raise ValueError("RMIA offline needs, for every candidate, a reference model trained without it")
        out_mean = torch.where(out, probabilities, torch.zeros_like(probabilities)).sum(0) / counts
        self._marginal = 0.5 * ((1 + self.offline_a) * out_mean + (1 - self.offline_a))

    @override
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ratio = true_class_probability(logits, labels) / self._marginal
        population = torch.sort(ratio).values
        # fraction of z with ratio(z) <= ratio(x) / gamma
        return torch.searchsorted(population, ratio / self.gamma, right=True).double() / len(population)
