"""In-memory image splits: the one data layout every part of fedsecure uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Split:
    """Images and integer class labels of one split.

    Attributes:
        images: float32 array (N, C, H, W) with intensities in [0, 1].
        labels: int64 array (N,) with values in ``range(n_classes)``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        """The samples at ``indices``, in that order."""
        return Split(self.images[indices], self.labels[indices])

    def tensors(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The split as (images, labels) tensors on ``device``."""
        return (
            torch.from_numpy(self.images).to(device),
            torch.from_numpy(self.labels).to(device),
        )

    @staticmethod
    def concatenate(splits: list[Split]) -> Split:
        """All samples of ``splits``, in order."""
        return Split(
            np.concatenate([s.images for s in splits]),
            np.concatenate([s.labels for s in splits]),
        )


@dataclass(frozen=True)
class ImageSplits:
    """A dataset's train, validation and test splits (pooled, before federation)."""

    train: Split
    val: Split
    test: Split
    n_classes: int

    @property
    def in_channels(self) -> int:
        """Number of image channels."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Spatial size (H, W)."""
        return tuple(self.train.images.shape[2:])  # type: ignore[return-value]
