"""Federating a dataset: pooled splits -> sites, each with its own train and test data."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from fedsecure.data.files import PooledDatalist, SiteDatalists
from fedsecure.data.medmnist import load_medmnist
from fedsecure.data.partition import split_like
from fedsecure.data.splits import ImageSplits, Split, n_classes_of
from fedsecure.data.synthetic import AcquisitionShift, SyntheticPhantoms
from fedsecure.errors import DataError
from fedsecure.registry import Registry
from fedsecure.seeding import numpy_rng


class Partitioner(Protocol):
    """Anything with ``split(labels, n_sites, rng)`` (see :mod:`fedsecure.data.partition`)."""

    def split(self, labels: np.ndarray, n_sites: int, rng: np.random.Generator) -> list[np.ndarray]:
        """Indices into ``labels``, one array per site."""
        ...


class DataSource(Protocol):
    """Where a federation's images come from."""

    def load(self) -> ImageSplits:
        """The pooled splits."""
        ...

    def acquisition(self, site: int) -> AcquisitionShift | None:
        """Site ``site``'s scanner, or None when the data already come from real scanners."""
        ...

    def describe(self) -> str:
        """A short name for messages (the file, or what is generated)."""
        ...


@dataclass(frozen=True)
class SiteData:
    """One site's local data: what never leaves the hospital.

    ``val`` is the site's share of the validation split (held out, never
    trained on; membership audits use it with ``test`` as non-members).
    """

    name: str
    train: Split
    test: Split
    val: Split | None = None

    @property
    def n_train(self) -> int:
        """Number of local training samples (the site's FedAvg weight)."""
        return len(self.train)


@dataclass(frozen=True)
class FederatedData:
    """Sites with local data, plus the dataset facts models and reports need."""

    sites: list[SiteData]
    n_classes: int
    in_channels: int
    image_size: tuple[int, ...]

    @property
    def spatial_dims(self) -> int:
        """2 for images, 3 for volumes."""
        return len(self.image_size)

    @property
    def test(self) -> Split:
        """The whole held-out test set: the union of the sites' local test sets."""
        return Split.concatenate([s.test for s in self.sites])

    def sha256(self) -> str:
        """Fingerprint of exactly what the sites hold (images, labels and the split)."""
        digest = hashlib.sha256()
        for site in self.sites:
            for split in (site.train, site.test, site.val):
                if split is None:
                    continue
                digest.update(split.images.tobytes())
                digest.update(split.labels.tobytes())
        return digest.hexdigest()

    def held_out(self, site: SiteData) -> Split:
        """A site's images never trained on: its test share and its validation share."""
        return Split.concatenate([site.test] + ([site.val] if site.val is not None and len(site.val) else []))

    @property
    def train(self) -> Split:
        """All sites' training data pooled (what a centralized baseline trains on)."""
        return Split.concatenate([s.train for s in self.sites])


def federate(source: DataSource, n_sites: int, partitioner: Partitioner, seed: int) -> FederatedData:
    """Split ``source`` across ``n_sites`` sites.

    The training split is divided by ``partitioner``; the test and validation
    splits are divided so each site's local share follows its training label
    mix (:func:`~fedsecure.data.partition.split_like`). Masks have no class per
    image: they are divided as one class (the spec refuses a label-skew partition
    for them). Each site's images then
    pass through its scanner, if the source has one.
    """
    splits = source.load()
    try:
        train_parts = partitioner.split(splits.train.strata, n_sites, numpy_rng(seed, "partition", "train"))
    except DataError as exc:
        raise DataError(f"{source.describe()}: {exc}") from None
    counts = np.stack([np.bincount(splits.train.strata[p], minlength=splits.n_classes) for p in train_parts])
    test_parts = split_like(splits.test.strata, counts, numpy_rng(seed, "partition", "test"))
    val_parts = split_like(splits.val.strata, counts, numpy_rng(seed, "partition", "val"))
    sites = []
    for k, (train_idx, test_idx, val_idx) in enumerate(zip(train_parts, test_parts, val_parts, strict=True)):
        train, test, val = splits.train.subset(train_idx), splits.test.subset(test_idx), splits.val.subset(val_idx)
        scanner = source.acquisition(k)
        if scanner is not None:
            train, test = scanner.apply(train, "train"), scanner.apply(test, "test")
            val = scanner.apply(val, "val") if len(val) else val
        sites.append(SiteData(name=f"site-{k}", train=train, test=test, val=val))
    return FederatedData(
        sites=sites,
        n_classes=splits.n_classes,
        in_channels=splits.in_channels,
        image_size=splits.image_size,
    )


def federate_site_files(source: SiteDatalists) -> FederatedData:
    """Sites that are hospitals already: each site's data is its own datalist's, split as the datalist says.

    Raises:
        DataError: a datalist or image is missing or malformed, a site has no training images,
            the sites' images differ in shape, or the labels hold one class.
    """
    sites = [
        SiteData(name=name, train=splits["train"], test=splits["test"], val=splits["val"])
        for name, splits in source.site_splits()
    ]
    labels = [split.labels for site in sites for split in (site.train, site.test, site.val) if split is not None]
    n_classes = n_classes_of(labels, source.describe())
    first = sites[0].train.images
    return FederatedData(sites=sites, n_classes=n_classes, in_channels=int(first.shape[1]),
                         image_size=tuple(int(side) for side in first.shape[2:]))


DATA_SOURCES: Registry[type] = Registry("data source")


@DATA_SOURCES.register("medmnist")
@dataclass(frozen=True)
class MedMNISTFile:
    """A MedMNIST-format ``.npz`` file (real images; sites have no simulated scanner).

    ``masks``: read its ``*_masks`` arrays (segmentation) instead of its class labels.
    """

    path: Path
    masks: bool = False

    def load(self) -> ImageSplits:
        """The file's splits (see :func:`~fedsecure.data.medmnist.load_medmnist`)."""
        return load_medmnist(self.path, masks=self.masks)

    def acquisition(self, site: int) -> None:
        """Real data: no simulated scanner."""
        return None

    def describe(self) -> str:
        """The file's path."""
        return str(self.path)


DATA_SOURCES.register("synthetic")(SyntheticPhantoms)
DATA_SOURCES.register("files")(PooledDatalist)


@dataclass(frozen=True)
class TrainSubset:
    """Another source with its training split cut to a random subset of ``train_samples`` images.

    For a quick first look, or an audit that wants a model that overfits (few
    images per site). Validation and test splits are kept whole.
    """

    source: DataSource
    train_samples: int
    seed: int

    def load(self) -> ImageSplits:
        """The source's splits, training split subsampled (seeded, without replacement)."""
        splits = self.source.load()
        available = len(splits.train)
        if self.train_samples > available:
            raise DataError(
                f"{self.source.describe()}: train_subset {self.train_samples} exceeds its {available} training images"
            )
        chosen = np.sort(numpy_rng(self.seed, "train-subset").choice(available, self.train_samples, replace=False))
        return dataclasses.replace(splits, train=splits.train.subset(chosen))

    def acquisition(self, site: int) -> AcquisitionShift | None:
        """The source's scanner for ``site``."""
        return self.source.acquisition(site)

    def describe(self) -> str:
        """The source, and the subset."""
        return f"{self.source.describe()} (a random {self.train_samples} of its training images)"
