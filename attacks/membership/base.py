"""The interface every membership-inference attack implements, the reference material, the registry.

An attack is *fit* on reference material (the outputs of reference models the
attacker trained itself on data whose membership it chose) and then *scores*
candidate samples from the attacked model's outputs: higher means "more likely
a member". It never sees which candidates were members of the attacked model;
the auditor keeps that truth for :func:`attacks.metrics.membership_scores`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedsecure.registry import Registry


@dataclass(frozen=True)
class ReferenceOutputs:
    """What the attacker's own reference models say about the candidates.

    Attributes:
        logits: (K, N, C) logits of each of K reference models on the N candidates.
        members: (K, N) whether candidate n was in reference model k's training data.
        labels: (N,) the candidates' labels.
    """

    logits: torch.Tensor
    members: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        k, n = self.members.shape
        if self.logits.shape[:2] != (k, n) or self.labels.shape != (n,):
            raise ValueError(
                f"logits {tuple(self.logits.shape)}, members {tuple(self.members.shape)} and labels "
                f"{tuple(self.labels.shape)} disagree on the number of models or candidates"
            )

    @property
    def models(self) -> int:
        """Number of reference models."""
        return self.members.shape[0]


class MembershipAttack(ABC):
    """Scores candidate samples by how likely they were in the attacked model's training data."""

    #: Whether :meth:`fit` needs reference models (the loss attack does not).
    needs_references: ClassVar[bool] = True

    def fit(self, references: ReferenceOutputs | None) -> MembershipAttack:
        """Learn from reference material; returns ``self``.

        Raises:
            ValueError: the attack needs references and got none (or too few).
        """
        if self.needs_references and (references is None or references.models == 0):
            raise ValueError(f"{type(self).__name__} needs reference models")
        self._fit(references)
        return self

    @abstractmethod
    def _fit(self, references: ReferenceOutputs | None) -> None:
        """Attack-specific fitting from ``references`` (None when the attack needs none)."""

    @abstractmethod
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(N,) membership scores from the attacked model's (N, C) logits on the candidates (same order as fit)."""


MEMBERSHIP_ATTACKS: Registry[type[MembershipAttack]] = Registry("membership attack")
