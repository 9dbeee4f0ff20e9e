"""Norm clipping: what bounds one party's influence on a sum."""

from __future__ import annotations

import torch


def clip_rows(vectors: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each vector along the last dimension scaled down to L2 norm ``max_norm`` if longer; also their norms.

    The scale is computed in float64 and capped at 1 so that rounding can never
    push a result above ``max_norm``. A batch of vectors (an audit's trials) is
    clipped row by row exactly as one vector is.

    Returns:
        The clipped vectors, and the original norms (float64, one per vector).
    """
    if max_norm <= 0:
        raise ValueError(f"max_norm must be > 0, got {max_norm}")
    wide = vectors.double()
    norms = wide.norm(dim=-1)
    scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms)).unsqueeze(-1)
    clipped = (wide * scale).to(vectors.dtype)
    # float32 rounding can leave a norm a hair above max_norm: shrink those rows by one ulp-level step.
    while bool((over := clipped.double().norm(dim=-1) > max_norm).any()):
        scale = torch.where(over.unsqueeze(-1), scale * (1 - 1e-7), scale)
        clipped = (wide * scale).to(vectors.dtype)
    return clipped, norms


def clip_to_norm(vector: torch.Tensor, max_norm: float) -> tuple[torch.Tensor, float]:
    """``vector`` scaled down to L2 norm ``max_norm`` if longer; also returns its original norm."""
    clipped, norms = clip_rows(vector, max_norm)
    return clipped, float(norms)
