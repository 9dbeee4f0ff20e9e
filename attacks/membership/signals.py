"""What a membership attack reads off a model's output for one sample (pure functions).

All take logits (..., C) and integer labels (...,) and return one value per sample.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def true_class_log_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log softmax(logits)[label]: minus the cross-entropy loss."""
    return F.log_softmax(logits.double(), dim=-1).gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)


def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy loss per sample."""
    return -true_class_log_probability(logits, labels)


def scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """LiRA's logit-scaled confidence ``log(p / (1 - p))`` of the true class, computed stably.

    ``log p - log(1 - p) = z_y - logsumexp_{c != y} z_c``: no probability is
    formed, so confidences near 1 keep their resolution (Carlini et al. 2022).
    """
    logits = logits.double()
    labels = labels.long().unsqueeze(-1)
    true = logits.gather(-1, labels).squeeze(-1)
    others = logits.scatter(-1, labels, float("-inf"))
    return true - torch.logsumexp(others, dim=-1)


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """softmax(logits)[label]: RMIA's Pr(x | model)."""
    return true_class_log_probability(logits, labels).exp()
