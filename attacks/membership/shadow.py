"""The shadow-model attack (Shokri et al. 2017): a classifier learns "in" from shadow models' outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from typing_extensions import override

from attacks.membership.base import MEMBERSHIP_ATTACKS, MembershipAttack, ReferenceOutputs
from attacks.membership.signals import loss, scaled_confidence


def _features(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sorted probabilities, the loss and the scaled confidence of the true class: (..., C + 2)."""
    probabilities = torch.softmax(logits.double(), -1).sort(-1, descending=True).values
    return torch.cat([probabilities, loss(logits, labels)[..., None], scaled_confidence(logits, labels)[..., None]], -1)


@MEMBERSHIP_ATTACKS.register("shadow")
@dataclass
class ShadowModelAttack(MembershipAttack):
    """One logistic-regression attack model per class, trained on shadow models' outputs labelled in/out.

    Shokri et al. train an attack model per class on the shadow models'
    prediction vectors; a logistic regression on the sorted prediction vector,
    the loss and the scaled confidence keeps that design with few parameters.

    Attributes:
        weight_decay: L2 penalty of the attack models.
    """

    weight_decay: float = 1e-3

    def _fit(self, references: ReferenceOutputs | None) -> None:
        assert references is not None
        labels = references.labels.expand(references.models, -1)
        features = _features(references.logits, labels)
        self._mean = features.flatten(0, 1).mean(0)
        self._std = features.flatten(0, 1).std(0).clamp(min=1e-6)
        self._models = {}
        for c in torch.unique(references.labels).tolist():
            chosen = labels == c
            x = (features[chosen] - self._mean) / self._std
            y = references.members.bool()[chosen].double()
            self._models[c] = self._logistic_regression(x, y)

    def _logistic_regression(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weights = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")
        design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            value = torch.nn.functional.binary_cross_entropy_with_logits(design @ weights, y)
            value = value + self.weight_decay * weights[:-1].pow(2).sum()
            value.backward()
            return value

        optimizer.step(closure)
        return weights.detach()

    @override
    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = (_features(logits, labels) - self._mean) / self._std
        design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
        scores = torch.zeros(len(labels), dtype=torch.float64)
        for c, weights in self._models.items():
            chosen = labels == c
            scores[chosen] = design[chosen] @ weights
        return scores
