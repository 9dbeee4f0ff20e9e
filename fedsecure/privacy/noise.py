"""Gaussian noise for differential privacy, reproducible or cryptographically secure.

``secure=False`` draws from a seeded torch generator: runs are reproducible,
but anyone who learns the seed can subtract the noise, so the guarantee holds
only against an adversary who cannot. ``secure=True`` draws uniform bits from
the operating system's CSPRNG (``os.urandom``) and shapes them with Box-Muller,
summing four draws scaled by 1/2 as Opacus's secure mode does (Holohan and
Braghin 2021) against floating-point attacks on the noise. Opacus's own secure
mode needs ``torchcsprng``, which has no build for current torch.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch


def _secure_standard_normal(n: int) -> np.ndarray:
    # 53-bit uniforms in (0, 1] from the OS CSPRNG, then Box-Muller.
    raw = np.frombuffer(os.urandom(16 * n), dtype=np.uint64).reshape(2, n)
    u1 = ((raw[0] >> np.uint64(11)).astype(np.float64) + 1.0) / 2.0**53
    u2 = (raw[1] >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * math.pi * u2)


def gaussian_noise(
    shape: tuple[int, ...] | torch.Size,
    std: float,
    *,
    secure: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, std^2) noise of ``shape``.

    Args:
        shape: output shape.
        std: standard deviation (0 gives zeros).
        secure: draw from the OS CSPRNG (see module docs); otherwise from ``generator``.
        generator: seeded CPU generator for reproducible noise (required when not secure).
        device: where the noise goes.
        dtype: its dtype.
    """
    if std == 0:
        return torch.zeros(shape, device=device, dtype=dtype)
    n = math.prod(shape)
    if secure:
        draws = sum(_secure_standard_normal(n) for _ in range(4)) / 2.0
        return torch.from_numpy(draws * std).reshape(shape).to(device=device, dtype=dtype)
    if generator is None:
        raise ValueError("reproducible noise needs a seeded generator")
    noise = torch.randn(n, generator=generator, dtype=torch.float64) * std
    return noise.reshape(shape).to(device=device, dtype=dtype)
