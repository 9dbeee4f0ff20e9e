"""Norm clipping: what bounds one party's influence on a sum."""

from __future__ import annotations

import torch


def clip_to_norm(vector: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, float]:
    """``vector`` scaled down to L2 norm ``max_norm`` if longer; also returns its original norm.

    The scale is computed in float64 and capped at 1 so that rounding can never
    push the result above ``max_norm``.
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    norm = float(vector.double().norm())
    if norm <= max_norm:
        return vector, norm
    scale = max_norm / norm
    clipped = (vector.double() * scale).to(vector.dtype)
    # float32 rounding can leave the norm a hair above max_norm: shrink by one ulp-level step.
    while float(clipped.double().norm()) > max_norm:
        scale *= 1 - 1e-7
        clipped = (vector.double() * scale).to(vector.dtype)
    return clipped, norm
