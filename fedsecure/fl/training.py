"""Local training: what a site does with its own data in one round.

The same function trains a federated client, a local-only site and the
centralized baseline, so that baselines and federation differ only in which
data they see and how often models are averaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedsecure.fl.task import TASKS, Task
from fedsecure.registry import Registry

OptimizerFactory = Callable[..., torch.optim.Optimizer]
OPTIMIZERS: Registry[OptimizerFactory] = Registry("optimizer")


@OPTIMIZERS.register("sgd")
def _sgd(params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


@OPTIMIZERS.register("adam")
def _adam(params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    # Adam's own first moment replaces SGD momentum.
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@dataclass(frozen=True)
class LocalTraining:
    """How a site trains in one round.

    Attributes:
        epochs: passes over the local data per round.
        batch_size: samples per step.
        lr: learning rate of the local optimizer.
        optimizer: registered optimizer name ("sgd", "adam"); its state is
            fresh every round, as in FedAvg.
        momentum: SGD momentum.
        weight_decay: L2 penalty.
        task: registered task name ("classification", "segmentation"): it decides the loss.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    task: str = "classification"

    def __post_init__(self) -> None:
        OPTIMIZERS.get(self.optimizer)  # fail at construction, not in round 7
        TASKS.get(self.task)

    @property
    def objective(self) -> Task:
        """The task whose loss the sites train on (and whose metrics judge the model)."""
        return TASKS.get(self.task)


GradientCorrection = Callable[[nn.Module], None]
"""A strategy's data-independent term added to every local step's gradient, in place (by parameter name).

FedProx's proximal pull ``mu * (w - w_global)`` and SCAFFOLD's control-variate
correction ``c - c_i`` depend on the model and on what the site already
holds, never on a training image. Under DP-SGD it is added after Opacus has
clipped and noised the step's gradient: post-processing, at no privacy cost.
"""


def train_local(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    training: LocalTraining,
    generator: torch.Generator,
    correction: GradientCorrection | None = None,
) -> int:
    """Train ``model`` in place on (images, labels) with mini-batch steps.

    Args:
        model: trained in place.
        images: (N, C, H, W) or (N, C, D, H, W) on the model's device.
        labels: (N,) classes or (N, *spatial) masks on the model's device.
        training: epochs, batch size, optimizer.
        generator: CPU generator that shuffles the batches (determinism).
        correction: a strategy's term added to each step's gradient (e.g. FedProx's proximal pull).

    Returns:
        The number of optimizer steps taken.
    """
    optimizer = OPTIMIZERS.get(training.optimizer)(
        model.parameters(), lr=training.lr, momentum=training.momentum, weight_decay=training.weight_decay
    )
    model.train()
    n = len(labels)
    steps = 0
    task = training.objective
    for _ in range(training.epochs):
        order = torch.randperm(n, generator=generator).to(images.device)
        for start in range(0, n, training.batch_size):
            batch = order[start : start + training.batch_size]
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(images[batch]), labels[batch]).backward()
            if correction is not None:
                correction(model)
            optimizer.step()
            steps += 1
    return steps


def full_batch_gradient(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, task: Task
) -> list[torch.Tensor]:
    """Gradient of the task's mean loss over all of (images, labels).

    Computed in chunks of ``batch_size`` (memory), weighted so that the result
    equals the gradient of the mean over the whole set. Returns one tensor per
    parameter, in ``model.parameters()`` order.
    """
    model.train()
    model.zero_grad(set_to_none=True)
    n = len(labels)
    for start in range(0, n, batch_size):
        chunk = slice(start, start + batch_size)
        # The loss is a mean of per-sample losses: a chunk's mean times its share is its part of the whole.
        part = images[chunk]
        loss = task.loss(model(part), labels[chunk]) * (len(part) / n)
        loss.backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def full_batch_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: LocalTraining,
    correction: GradientCorrection | None = None,
) -> int:
    """One plain gradient step on the mean loss over all of (images, labels) (FedSGD's local work); returns 1."""
    gradients = full_batch_gradient(model, images, labels, training.batch_size, training.objective)
    for parameter, gradient in zip(model.parameters(), gradients, strict=True):
        parameter.grad = gradient
    if correction is not None:
        correction(model)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.grad is not None:
                parameter -= training.lr * parameter.grad
    model.zero_grad(set_to_none=True)
    return 1


def plain_loop(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: LocalTraining,
    generator: torch.Generator, correction: GradientCorrection | None, full_batch: bool,
) -> int:
    """Local training without a privacy mechanism (see :class:`fedsecure.fl.privacy_hooks.LocalLoop`)."""
    if full_batch:
        return full_batch_step(model, images, labels, training, correction)
    return train_local(model, images, labels, training, generator, correction)
