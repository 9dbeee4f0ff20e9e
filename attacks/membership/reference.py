"""The reference-model attack (Ye et al. 2022, attack R): each sample against its own threshold."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing_extensions import override

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.signals import loss


@MEMBERSHIP_ATTACKS.register("reference")
@dataclass
class ReferenceAttack(MembershipAttack):
    """Score = the fraction of reference models *without* the sample whose loss on it is above the target's.

    Hard samples have high loss everywhere and easy ones low loss everywhere;
    comparing the target's loss with reference models that never saw the sample
    calibrates each sample separately. Ties count one half.
    """

    def _fit(self, references: ReferenceOutputs | None) -> None:
        assert references is not None
        self._losses = loss(references.logits, references.labels.expand(references.models, -1))
        self._out = ~references.members.bool()
        if not self._out.any(0).all():
            raise ValueError("every candidate needs at least one reference model trained without it")

    @override
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = loss(logits, labels)
        above = ((self._losses > target) & self._out).sum(0).double()
        ties = ((self._losses == target) & self._out).sum(0).double()
        return (above + 0.5 * ties) / self._out.sum(0)
