"""The fixed-point grid every aggregation protocol sums on.

Each site's weighted update is rounded to multiples of ``2**-FRACTION_BITS``
and the sums are exact integers. A plaintext server sums the integers
directly; under CKKS the sites encrypt the same grid values, and the decrypted
sum (grid value + CKKS noise far below half a grid step) rounds back to the
same integers. So secure aggregation returns *bit for bit* the aggregate the
plaintext protocol returns, and a CKKS federation trains exactly the model a
plain one does. The grid's step, 2**-32 (2.3e-10), sets the absolute precision.
"""

from __future__ import annotations

import numpy as np
import torch

FRACTION_BITS = 32
GRID = 2.0**-FRACTION_BITS
_LIMIT = 2.0**62  # int64 headroom for sums of many sites


def to_grid(values: np.ndarray) -> np.ndarray:
    """``values`` (float64) as integer multiples of the grid step."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0**FRACTION_BITS)
    if not np.all(np.abs(scaled) < _LIMIT):
        raise OverflowError("values too large (or not finite) for the fixed-point grid")
    return scaled.astype(np.int64)


def from_grid(integers: np.ndarray) -> np.ndarray:
    """Grid integers back to float64 values (exact for |integer| < 2**53)."""
    return np.asarray(integers, dtype=np.float64) * GRID


def weighted_mean(total: np.ndarray, total_weight: int) -> torch.Tensor:
    """The float32 mean update from the grid sum of ``weight * update`` and the grid sum of weights."""
    if total_weight <= 0:
        raise ValueError("the aggregate carries no weight")
    return torch.from_numpy(from_grid(total) / from_grid(np.array(total_weight))).float()
