"""Synthetic multi-site phantoms: the embedded default, generated from the seed.

Each image is MONAI's synthetic "anatomy" (random discs, ``create_test_image_2d``;
random spheres in volumes, ``create_test_image_3d``).
Half the images carry a *lesion*: one small disc (sphere) brighter than any tissue, so
the label is a property of the image content, not of the site. For segmentation
(``masks``) the label is the image's mask instead: 0 background, 1 tissue, 2 lesion. Each site then
images its patients through its own scanner: a contrast curve (gamma), a
smooth multiplicative bias field and Gaussian noise, drawn once per site from
the seed with MONAI's intensity transforms. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsecure.data.splits import ImageSplits, Split
from fedsecure.seeding import derive_seed, numpy_rng


@dataclass(frozen=True)
class AcquisitionShift:
    """One site's scanner: how it distorts the intensities of every image it takes.

    Attributes:
        gamma: contrast curve exponent (1 = unchanged).
        bias_coeff: largest coefficient of the degree-3 log bias field.
        noise_std: standard deviation of additive Gaussian noise.
        seed: seed of the site's per-image randomness (bias field, noise).
    """

    gamma: float
    bias_coeff: float
    noise_std: float
    seed: int

    def apply(self, split: Split, stream: str) -> Split:
        """``split`` as this site's scanner records it.

        Args:
            split: clean images.
            stream: name of the random stream (e.g. "train"), so that a site's
                train and test images get independent noise.
        """
        # MONAI's data and transform modules take a second to import; only synthetic data needs them.
        from monai.transforms import AdjustContrast, RandBiasField, RandGaussianNoise

        contrast = AdjustContrast(gamma=self.gamma)
        bias = RandBiasField(degree=3, coeff_range=(0.0, self.bias_coeff), prob=1.0)
        noise = RandGaussianNoise(prob=1.0, std=self.noise_std, sample_std=False)
        seed = derive_seed(self.seed, stream) % 2**32
        bias.set_random_state(seed=seed)
        noise.set_random_state(seed=(seed + 1) % 2**32)
        shifted = np.empty_like(split.images)
        for i, image in enumerate(split.images):
            out = noise(bias(contrast(image)))
            shifted[i] = np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
        return Split(shifted, split.labels)


@dataclass(frozen=True)
class SyntheticPhantoms:
    """The embedded default data source: lesion detection on synthetic phantoms.

    Args:
        seed: the root seed; images, labels and site scanners derive from it.
        n_sites: number of sites (each gets its own scanner).
        train_samples: pooled training images (split across sites later).
        val_samples: pooled validation images.
        test_samples: pooled test images.
        image_size: side in pixels (voxels): height and width, and depth for volumes.
        spatial_dims: 2 for images, 3 for volumes.
        masks: label each image with its mask (0 background, 1 tissue, 2 lesion) instead of
            whether it holds a lesion.
    """

    seed: int = 0
    n_sites: int = 4
    train_samples: int = 1600
    val_samples: int = 200
    test_samples: int = 400
    image_size: int = 28
    spatial_dims: int = 2
    masks: bool = False

    def load(self) -> ImageSplits:
        """The clean (scanner-free) pooled splits, 1 channel; 2 classes, or masks of 3."""
        return ImageSplits(
            train=self._phantoms(self.train_samples, "train"),
            val=self._phantoms(self.val_samples, "val"),
            test=self._phantoms(self.test_samples, "test"),
            n_classes=3 if self.masks else 2,
        )

    def describe(self) -> str:
        """What is generated, for messages."""
        kind = "volumes" if self.spatial_dims == 3 else "images"
        return f"synthetic phantoms (seed {self.seed}, {self.train_samples} training {kind})"

    def acquisition(self, site: int) -> AcquisitionShift:
        """Site ``site``'s scanner."""
        rng = numpy_rng(self.seed, "synthetic", "scanner", site)
        return AcquisitionShift(
            gamma=float(rng.uniform(0.6, 1.6)),
            bias_coeff=float(rng.uniform(0.05, 0.4)),
            noise_std=float(rng.uniform(0.02, 0.10)),
            seed=derive_seed(self.seed, "synthetic", "scanner-noise", site),
        )

    def _phantoms(self, n: int, stream: str) -> Split:
        from monai.data.synthetic import create_test_image_2d, create_test_image_3d

        rng = numpy_rng(self.seed, "synthetic", stream)
        # MONAI's generator takes the legacy RandomState; seed it from our stream.
        legacy = np.random.RandomState(int(rng.integers(2**32)))
        size, dims = self.image_size, self.spatial_dims
        create = create_test_image_3d if dims == 3 else create_test_image_2d
        labels = rng.permutation(np.arange(n) % 2).astype(np.int64)
        images = np.empty((n, 1, *(size,) * dims), dtype=np.float32)
        masks = np.zeros((n, *(size,) * dims), dtype=np.int64)
        for i, label in enumerate(labels):
            tissue, _ = create(
                *(size,) * dims, num_objs=int(legacy.randint(4, 9)), rad_max=max(3, size // 5),
                rad_min=2, num_seg_classes=1, random_state=legacy,
            )
            image = 0.5 * tissue
            masks[i] = tissue > 0
            if label == 1:
                _, lesion = create(
                    *(size,) * dims, num_objs=1, rad_max=5, rad_min=3, num_seg_classes=1, random_state=legacy
                )
                # A small dense focus, brighter than any tissue (<= 0.5) wherever it lands.
                image = np.where(lesion > 0, legacy.uniform(0.8, 1.0), image)
                masks[i][lesion > 0] = 2
            images[i, 0] = np.clip(image, 0.0, 1.0)
        return Split(images, masks if self.masks else labels)
