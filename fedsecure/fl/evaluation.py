"""Utility of a model on held-out data: ROC AUC (MONAI's metric) and accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.metrics import compute_roc_auc
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Utility:
    """Test-set utility.

    Attributes:
        auc: ROC AUC (binary: of the positive class; multi-class: macro one-vs-rest);
            None when the labels hold a single class and AUC is undefined.
        accuracy: fraction of correct arg-max predictions.
        n: number of test samples.
    """

    auc: float | None
    accuracy: float
    n: int


@torch.no_grad()
def logits(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits (N, n_classes) of ``model`` in eval mode, in chunks, without gradients; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return torch.cat([model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Class probabilities (N, n_classes) of ``model`` in eval mode."""
    return F.softmax(logits(model, images, batch_size), dim=1)


def utility_from_predictions(probabilities: torch.Tensor, labels: torch.Tensor) -> Utility:
    """AUC and accuracy of class ``probabilities`` (N, C) against integer ``labels`` (N,)."""
    probabilities, labels = probabilities.detach().cpu().double(), labels.detach().cpu()
    accuracy = float((probabilities.argmax(1) == labels).double().mean()) if len(labels) else float("nan")
    n_classes = probabilities.shape[1]
    if len(torch.unique(labels)) < 2:
        auc = None
    elif n_classes == 2:
        auc = float(compute_roc_auc(probabilities[:, 1], labels))
    else:
        one_hot = F.one_hot(labels, n_classes)
        present = one_hot.sum(0) > 0  # macro AUC over the classes that occur
        auc = float(compute_roc_auc(probabilities[:, present], one_hot[:, present], average="macro"))
    return Utility(auc=auc, accuracy=accuracy, n=len(labels))


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Utility:
    """Utility of ``model`` on (images, labels)."""
    return utility_from_predictions(predict(model, images), labels)
