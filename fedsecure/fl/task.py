"""What the labels mean: the task decides the loss, the metrics and what an attack reads off a model.

Two tasks, chosen by name (``[data] task``) from :data:`TASKS`:

* ``classification``: one integer class per image; cross-entropy; ROC AUC and accuracy.
* ``segmentation`` (:mod:`fedsecure.fl.segmentation`): an integer mask per image, the
  same spatial size; MONAI's ``DiceCELoss``; Dice per class and HD95.

Everything that trains, evaluates or attacks takes the task from here, so no
code elsewhere asks which task it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedsecure.errors import NotSupportedError
from fedsecure.fl.evaluation import Utility, logits, predict, utility_from_predictions
from fedsecure.registry import Registry


class Task(ABC):
    """One kind of label, and everything that depends on it."""

    #: The report's headline metric: a ``Utility`` field name.
    metric: str = "auc"
    #: Images per forward pass when evaluating (a dense output is large).
    eval_batch: int = 512
    #: Whether a label is a mask of the image's size (what the data sources read).
    masks: bool = False
    #: Whether the utility pools from per-site counts (score histograms: the Flower engine, no prediction
    #: leaving a site).
    pooled_from_counts: bool = True
    #: The training loss as an inversion replays it (a name in ``attacks.inversion.replay.LOSSES``).
    replay_loss: str = "cross_entropy"

    @abstractmethod
    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss, the mean over the batch of a per-sample loss (so DP-SGD clips samples)."""

    @abstractmethod
    def criterion(self) -> nn.Module:
        """:meth:`loss` as a module (Opacus's ``make_private`` takes one)."""

    @abstractmethod
    def utility(self, probabilities: torch.Tensor, labels: torch.Tensor) -> Utility:
        """The test utility of class ``probabilities`` (softmax over dim 1) against ``labels``."""

    @abstractmethod
    def check_outputs(self, shape: tuple[int, ...], n_classes: int, image_size: tuple[int, ...], model: str) -> None:
        """Raise :class:`NotSupportedError` when a model's output ``shape`` on one image does not fit the task."""

    @abstractmethod
    def attack_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-sample logits (N, C') that a membership attack scores against :meth:`attack_labels`.

        Classification: the logits themselves. A dense task summarises each image's output
        against its mask as one two-class logit pair (see :mod:`fedsecure.fl.segmentation`).
        """

    @torch.no_grad()
    def sample_logits(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """:meth:`attack_logits` of ``model`` on (images, labels), float64 on the CPU, a chunk at a time.

        A dense task's logits are reduced chunk by chunk: the whole set's would not fit in memory.
        """
        chunks = [
            self.attack_logits(
                logits(model, images[i : i + self.eval_batch], self.eval_batch).double(),
                labels[i : i + self.eval_batch].to(images.device),
            ).cpu()
            for i in range(0, len(images), self.eval_batch)
        ]
        return torch.cat(chunks) if chunks else torch.zeros((0, 2), dtype=torch.float64)

    @abstractmethod
    def attack_labels(self, labels: np.ndarray) -> np.ndarray:
        """The per-sample labels (N,) an attack scores :meth:`attack_logits` against."""

    def recovered_label_score(self, recovered: torch.Tensor, truth: torch.Tensor, n_classes: int) -> float | None:
        """How well an inversion recovered dense labels (a mask's mean Dice); None where labels are classes."""
        return None

    @abstractmethod
    def mislabel(self, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
        """Wrong labels for ``labels`` (canaries: a sample no model would fit without having seen it)."""


TASKS: Registry[Task] = Registry("task")


def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, task: Task) -> Utility:
    """Utility of ``model`` on (images, labels), by ``task``'s metrics."""
    return task.utility(predict(model, images, task.eval_batch), labels)


class Classification(Task):
    """One class per image: cross-entropy, ROC AUC and accuracy."""

    metric = "auc"

    def loss(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy."""
        return F.cross_entropy(outputs, labels)

    def criterion(self) -> nn.Module:
        """``nn.CrossEntropyLoss``."""
        return nn.CrossEntropyLoss()

    def utility(self, probabilities: torch.Tensor, labels: torch.Tensor) -> Utility:
        """AUC and accuracy (:func:`~fedsecure.fl.evaluation.utility_from_predictions`)."""
        return utility_from_predictions(probabilities, labels)

    def check_outputs(self, shape: tuple[int, ...], n_classes: int, image_size: tuple[int, ...], model: str) -> None:
        """A classifier gives one row of ``n_classes`` logits per image."""
        if shape != (1, n_classes):
            raise NotSupportedError(
                f"model {model!r} gives outputs of shape {shape[1:]} per image; classification "
                f"needs {n_classes} class logits (a segmentation network needs data.task = \"segmentation\")"
            )

    def attack_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The logits themselves."""
        return logits

    def attack_labels(self, labels: np.ndarray) -> np.ndarray:
        """The labels themselves."""
        return labels

    def mislabel(self, labels: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
        """Another class, uniformly among the others."""
        return (labels + 1 + rng.integers(0, n_classes - 1, len(labels))) % n_classes


TASKS.register("classification")(Classification())
