"""The loss-threshold attack (Yeom et al. 2018): members have lower loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from typing_extensions import override

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.signals import loss


@MEMBERSHIP_ATTACKS.register("loss")
@dataclass
class LossAttack(MembershipAttack):
    """Score = minus the cross-entropy loss; every threshold on it is one Yeom et al. attack.

    Yeom et al. threshold at the mean training loss; reporting the whole ROC
    covers that threshold and every other one. Needs no reference models.
    """

    needs_references: ClassVar[bool] = False

    @override
    def _fit(self, references: ReferenceOutputs | None) -> None:
        """Nothing to learn: the loss alone is the score."""

    @override
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -loss(logits, labels)
