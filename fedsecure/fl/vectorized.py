"""Many FedAvg federations of one architecture at once, as one ``torch.func.vmap`` batch.

Membership audits train tens of reference federations that differ only in
which samples each site holds. Instead of one federation after another, the
K federations' models are stacked (``torch.func.stack_module_state``) and
every local SGD step runs for all K at once: each model draws its own
mini-batches from its own samples (a membership mask), padded to a common
shape with zero-weight entries, so model k takes exactly the steps
:func:`~fedsecure.fl.training.train_local` would take on its samples (its own
shuffling aside). The server step is FedAvg's weighted mean of the updates.

Scope: FedAvg, every site every round, plain SGD (momentum and weight decay
included), no privacy mechanism, models whose normalization does not track
batch statistics. Anything else raises :class:`NotSupportedError`; callers
fall back to :class:`~fedsecure.fl.federation.Federation`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap
from torch.nn import functional as F

from fedsecure.errors import NotSupportedError
from fedsecure.fl.training import LocalTraining

Stacked = dict[str, torch.Tensor]


def _check_supported(model: nn.Module, training: LocalTraining) -> None:
    if training.optimizer != "sgd":
        raise NotSupportedError(f"vectorized training supports plain SGD only, not {training.optimizer!r}")
    if any(getattr(m, "track_running_stats", False) for m in model.modules()):
        raise NotSupportedError("vectorized training does not support normalization layers with running statistics")


def _masked_loss(model: nn.Module, buffers: Stacked):
    def loss(params: Stacked, images: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (params, buffers), (images,))
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        return (weights * per_sample).sum() / weights.sum().clamp(min=1.0)

    return loss


def train_local_vectorized(
    model: nn.Module,
    params: Stacked,
    images: torch.Tensor,
    labels: torch.Tensor,
    members: torch.Tensor,
    training: LocalTraining,
    generator: torch.Generator,
) -> Stacked:
    """Local mini-batch SGD of K stacked models, each on its own samples.

    Args:
        model: the architecture (a module whose parameters are ignored).
        params: stacked parameters, each (K, ...).
        images: (N, C, H, W) the site's candidate images, on the models' device.
        labels: (N,) their labels.
        members: (K, N) bool, which samples each model trains on.
        training: epochs, batch size, learning rate, momentum, weight decay.
        generator: CPU generator for the models' shuffling.

    Returns:
        The stacked parameters after training (new tensors).
    """
    _check_supported(model, training)
    device = images.device
    buffers = {n: b for n, b in model.named_buffers()}
    step = vmap(grad(_masked_loss(model, buffers)), in_dims=(0, 0, 0, 0))
    current = {n: p.clone() for n, p in params.items()}
    velocity = {n: torch.zeros_like(p) for n, p in params.items()} if training.momentum else None
    counts = members.sum(1)
    longest = int(counts.max())
    for _ in range(training.epochs):
        # Each model's own samples in random order, padded at the end (padding weighs zero).
        keys = torch.rand(members.shape, generator=generator).to(device)
        keys = torch.where(members, keys, keys + 2.0)
        order = torch.argsort(keys, dim=1)[:, :longest]
        valid = torch.arange(longest, device=device)[None, :] < counts[:, None]
        for start in range(0, longest, training.batch_size):
            index = order[:, start : start + training.batch_size]
            weights = valid[:, start : start + training.batch_size].float()
            gradients = step(current, images[index], labels[index], weights)
            active = (weights.sum(1) > 0).float()  # a model whose samples ran out this epoch stands still
            for name in current:
                shape = (-1,) + (1,) * (current[name].dim() - 1)
                g = gradients[name] + training.weight_decay * current[name]
                if velocity is not None:
                    velocity[name] = torch.where(
                        active.view(shape) > 0, training.momentum * velocity[name] + g, velocity[name]
                    )
                    g = velocity[name]
                current[name] = current[name] - training.lr * active.view(shape) * g
    return current


def fedavg_vectorized(
    model: nn.Module,
    sites: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    rounds: int,
    training: LocalTraining,
    generator: torch.Generator,
) -> list[nn.Module]:
    """K FedAvg federations at once; returns the K final global models.

    Args:
        model: the initial global model (every federation starts from it).
        sites: per site, (images, labels, members (K, n_site) bool) on the model's device.
        rounds: communication rounds (every site takes part in every round).
        training: the sites' local training.
        generator: CPU generator for the shuffling.
    """
    _check_supported(model, training)
    k = sites[0][2].shape[0]
    copies = [copy.deepcopy(model) for _ in range(k)]
    global_params, _ = stack_module_state(copies)
    global_params = {n: p.detach() for n, p in global_params.items()}
    for _ in range(rounds):
        total = {n: torch.zeros_like(p) for n, p in global_params.items()}
        weight = torch.zeros(k, device=next(iter(global_params.values())).device)
        for images, labels, members in sites:
            local = train_local_vectorized(model, global_params, images, labels, members, training, generator)
            n = members.sum(1).float()
            for name in total:
                shape = (-1,) + (1,) * (total[name].dim() - 1)
                total[name] += n.view(shape) * (local[name] - global_params[name])
            weight += n
        global_params = {
            name: global_params[name] + total[name] / weight.clamp(min=1).view((-1,) + (1,) * (p.dim() - 1))
            for name, p in global_params.items()
        }
    for index, replica in enumerate(copies):
        with torch.no_grad():
            for name, parameter in replica.named_parameters():
                parameter.copy_(global_params[name][index])
    return copies
