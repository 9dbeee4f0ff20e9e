"""Every random stream of a run derives from the spec's one seed.

Streams are named ("partition", "site-2/round-5", ...) so that adding a new
consumer of randomness never shifts the numbers of an existing one, and the
names are hashed with a stable hash (not Python's salted ``hash``).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit seed for the stream ``names`` under the root ``seed``.

    Args:
        seed: the root seed (the spec's ``seed``).
        names: the path of the stream, e.g. ``("site", 2, "round", 5)``.
    """
    key = "/".join(str(n) for n in (seed, *names)).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1


def numpy_rng(seed: int, *names: str | int) -> np.random.Generator:
    """A NumPy generator for the named stream."""
    return np.random.default_rng(derive_seed(seed, *names))


def torch_generator(seed: int, *names: str | int) -> torch.Generator:
    """A CPU torch generator for the named stream."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))
