"""In-memory image splits: the one data layout every part of fedsecure uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedsecure.errors import DataError


@dataclass(frozen=True)
class Split:
    """Images and their integer labels (a class each, or a mask each) of one split.

    Attributes:
        images: float32 array (N, C, H, W) for images or (N, C, D, H, W) for
            volumes, with intensities in [0, 1].
        labels: int64 array (N,) of classes in ``range(n_classes)``, or (N, H, W)
            / (N, D, H, W) masks of the images' size whose voxels hold a class (0: background).
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim not in (4, 5):
            raise ValueError(f"images must be (N, C, H, W) or (N, C, D, H, W), got shape {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.labels.ndim > 1 and self.labels.shape[1:] != self.images.shape[2:]:
            raise ValueError(f"masks of size {self.labels.shape[1:]} for images of size {self.images.shape[2:]}")

    @property
    def strata(self) -> np.ndarray:
        """One class per sample to stratify splits by: the class, or 0 for every mask (no class to balance)."""
        return self.labels if self.labels.ndim == 1 else np.zeros(len(self.labels), dtype=np.int64)

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
    def image_size(self) -> tuple[int, ...]:
        """Spatial size: (H, W) of images, (D, H, W) of volumes."""
        return tuple(int(side) for side in self.train.images.shape[2:])


def n_classes_of(labels: list[np.ndarray], where: str, min_classes: int = 2) -> int:
    """The number of classes ``labels`` reach (the largest label + 1).

    Raises:
        DataError: fewer than ``min_classes``; a whole dataset needs two (``where`` names it).
    """
    n_classes = int(max(int(part.max(initial=0)) for part in labels)) + 1
    if n_classes < min_classes:
        raise DataError(f"{where}: labels hold a single class; an audit needs at least two (masks: a structure)")
    return n_classes
