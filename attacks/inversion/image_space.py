"""Where an inversion searches: raw pixels, or the span of the attacker's public images.

A knowledgeable attacker does not search all of pixel space. Holding public
images of the same modality (chest X-rays look alike), it can search their
principal subspace: images ``mean + sum_j c_j s_j u_j`` with ``u_j`` the
leading principal directions and ``s_j`` their standard deviations, so that
``c ~ N(0, 1)`` is a plausible image. This is the linear version of a
generative image prior (Jeon et al. 2021, GIAS): fewer unknowns, images that
look like the modality, and the gradient only has to pin down the rest. The
leakage is still judged against the public mean image, which the attacker
knew before, so the subspace does not inflate the measured gain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PixelSpace:
    """Search the pixels directly, inside the value range."""

    low: float
    high: float

    def initial(self, shape: tuple[int, ...], generator: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        """Uniform random pixels, or ``start`` plus 10% uniform noise."""
        noise = torch.rand(shape, generator=generator)
        if start is None:
            return self.low + (self.high - self.low) * noise
        return (start + 0.1 * (self.high - self.low) * (noise - 0.5)).clamp(self.low, self.high)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """The images (the latent is the images)."""
        return latent

    def penalty(self, latent: torch.Tensor) -> torch.Tensor:
        """No density model in pixel space: zero per candidate."""
        return latent.new_zeros(latent.shape[0])

    def project(self, latent: torch.Tensor) -> None:
        """Keep pixels in the value range (the box constraint), in place."""
        latent.clamp_(self.low, self.high)


@dataclass(frozen=True)
class PrincipalSpace:
    """Search the leading principal subspace of public images.

    Attributes:
        mean: (C, H, W) or (C, D, H, W) mean public image.
        basis: (k, C*H*W) or (k, C*D*H*W) principal directions, each scaled by its standard deviation.
    """

    mean: torch.Tensor
    basis: torch.Tensor

    @classmethod
    def fit(cls, public_images: torch.Tensor, components: int) -> PrincipalSpace:
        """The ``components`` leading directions of ``public_images`` (N, C, H, W) or (N, C, D, H, W)."""
        flat = public_images.detach().double().cpu().flatten(1)
        mean = flat.mean(0)
        _, singular, directions = torch.linalg.svd(flat - mean, full_matrices=False)
        k = min(components, len(singular))
        scale = singular[:k] / max(len(flat) - 1, 1) ** 0.5
        return cls(mean=mean.float().view(public_images.shape[1:]), basis=(scale[:, None] * directions[:k]).float())

    def initial(self, shape: tuple[int, ...], generator: torch.Generator, start: torch.Tensor | None) -> torch.Tensor:
        """Coefficients (*batch, k) from N(0, 1) (a random plausible image), or near 0 (the mean) given a start."""
        batch = shape[: len(shape) - self.mean.dim()]  # the image's own axes are (C, H, W) or (C, D, H, W)
        coefficients = torch.randn((*batch, len(self.basis)), generator=generator)
        return coefficients if start is None else 0.1 * coefficients

    def penalty(self, latent: torch.Tensor) -> torch.Tensor:
        """Negative log-density of the Gaussian model per candidate (up to constants): mean of c^2."""
        return latent.pow(2).flatten(1).mean(1)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Images from coefficients."""
        return self.mean + (latent @ self.basis).view(*latent.shape[:-1], *self.mean.shape)

    def project(self, latent: torch.Tensor) -> None:
        """Nothing to project: the value range is enforced on the final images."""
