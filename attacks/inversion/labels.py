"""Label recovery from the last layer's gradient (no optimization).

For a linear output layer ``z = W h + b`` under mean cross-entropy over a
batch of B images, the bias gradient is ``(1/B) sum_i (p_i - y_i)``: softmax
outputs minus one-hot labels.

* **iDLG** (Zhao et al. 2020), B = 1: ``p - y`` is negative only at the true
  class, so the label is the argmin of the bias gradient. Without a bias, the
  weight gradient's row ``c`` is ``(p_c - y_c) h`` and, for non-negative
  features (after ReLU or sigmoid), only the true class's row sums below zero.
* **Label counts**, B > 1 (as in Wainakh et al. 2022): the count of class c is
  ``B * (mean_i p_ic - g_c)``; the mean prediction is estimated from the
  model's outputs on images the attacker holds (or 1/classes without them),
  and the counts are rounded to integers summing to B.

For a multi-step update the pseudo-gradient ``-update / (lr * steps)`` stands
in for the gradient; the estimate then degrades as the model moves.
"""

from __future__ import annotations

import torch
from torch import nn

from attacks.inversion.observation import Observation


def output_layer(model: nn.Module, n_classes: int) -> tuple[str, str | None]:
    """Parameter names (weight, bias or None) of the model's last linear layer.

    Raises:
        ValueError: the model's last linear layer does not output ``n_classes`` values.
    """
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None or found[1].out_features != n_classes:
        raise ValueError(f"label recovery needs a final nn.Linear layer with {n_classes} outputs")
    prefix = f"{found[0]}." if found[0] else ""
    return prefix + "weight", (prefix + "bias" if found[1].bias is not None else None)


def _largest_remainder(estimate: torch.Tensor, total: int) -> torch.Tensor:
    estimate = estimate.clamp(min=0)
    if float(estimate.sum()) <= 0:
        estimate = torch.ones_like(estimate)
    scaled = estimate * (total / estimate.sum())
    counts = scaled.floor().long()
    remainder = scaled - counts
    for index in torch.argsort(remainder, descending=True)[: total - int(counts.sum())]:
        counts[index] += 1
    return counts


def mean_prediction(observation: Observation, public_images: torch.Tensor | None) -> torch.Tensor:
    """The attacker's estimate of the model's mean softmax output on the site's images."""
    if public_images is None or len(public_images) == 0:
        return torch.full((observation.n_classes,), 1.0 / observation.n_classes)
    model = observation.model
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            return torch.softmax(model(public_images.to(device)), dim=-1).mean(0).cpu()
    finally:
        model.train(was_training)


def recover_labels(observation: Observation, public_images: torch.Tensor | None = None) -> torch.Tensor:
    """The labels of the observed images, sorted (the slots' order is unknowable).

    Args:
        observation: what the server saw.
        public_images: images the attacker holds, to estimate the model's mean
            prediction (used for batches of more than one image).

    Raises:
        ValueError: no final linear layer in the update, or a batch without a bias to count with.
    """
    weight_name, bias_name = output_layer(observation.model, observation.n_classes)
    gradient = observation.pseudo_gradient()
    if bias_name is not None and bias_name in gradient:
        bias_gradient = gradient[bias_name].detach().cpu().double()
    elif observation.n_images == 1 and weight_name in gradient:
        return torch.argmin(gradient[weight_name].detach().cpu().sum(1)).reshape(1)
    else:
        raise ValueError("label recovery needs the output layer's bias gradient (or its weight for one image)")
    if observation.n_images == 1:
        return torch.argmin(bias_gradient).reshape(1)
    mean_p = mean_prediction(observation, public_images).double()
    counts = _largest_remainder(observation.n_images * (mean_p - bias_gradient), observation.n_images)
    return torch.repeat_interleave(torch.arange(observation.n_classes), counts)
