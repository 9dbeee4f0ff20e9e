"""Packing a flat vector into ciphertext-sized chunks, and back.

The whole update is packed contiguously: ciphertext i holds values
``[i * slots, (i + 1) * slots)``, the last one zero-padded. One ciphertext per
layer would waste the slots of small layers and overflow a ciphertext on large
ones (TenSEAL's "does not fit" path).
"""

from __future__ import annotations

import numpy as np


def n_chunks(length: int, slots: int) -> int:
    """Ciphertexts needed for ``length`` values."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    return max(1, -(-length // slots))


def pack(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    """``vector`` split into contiguous chunks of ``slots`` values (the last zero-padded)."""
    flat = np.asarray(vector, dtype=np.float64).reshape(-1)
    padded = np.zeros(n_chunks(len(flat), slots) * slots)
    padded[: len(flat)] = flat
    return list(padded.reshape(-1, slots))


def unpack(chunks: list[np.ndarray], length: int) -> np.ndarray:
    """The first ``length`` values of the concatenated ``chunks``."""
    flat = np.concatenate([np.asarray(c, dtype=np.float64) for c in chunks])
    if len(flat) < length:
        raise ValueError(f"chunks hold {len(flat)} values, {length} expected")
    return flat[:length]
