"""A hospital's own image files as a data source: per-site datalists, or one datalist to partition.

Two shapes of the same source (``source = "files"``):

* :class:`SiteDatalists`: one datalist per site (``[[data.site]]``). Each site
  is a hospital, so there is nothing to partition; a site's images are its own.
* :class:`PooledDatalist`: one datalist (``data.datalist``) for a dataset not
  yet split by site; it is federated like a MedMNIST file, by the spec's partitioner.

In both, an image's split comes from the datalist's ``split`` column, or, for
images without one, from a seeded split stratified by class
(``val_fraction``, ``test_fraction``). With ``masks`` (segmentation) each entry's
``label`` is its mask file, loaded beside it. Images load through MONAI with the
declared :class:`~fedsecure.data.image_files.Preprocessing`, cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedsecure.data.datalist import SPLIT_NAMES, DatalistEntry, read_datalist
from fedsecure.data.image_files import Preprocessing, load_images, load_images_with_masks
from fedsecure.data.partition import split_like
from fedsecure.data.splits import ImageSplits, Split, n_classes_of
from fedsecure.errors import DataError
from fedsecure.seeding import numpy_rng


@dataclass(frozen=True)
class SiteDatalist:
    """One hospital: its name and its datalist (Decathlon ``.json`` or ``.csv``)."""

    name: str
    datalist: Path


@dataclass(frozen=True)
class DatalistSplitter:
    """How images without a ``split`` in their datalist are divided (per class, seeded)."""

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    def assign(self, entries: Sequence[DatalistEntry], stream: str) -> dict[str, list[DatalistEntry]]:
        """The entries by split: the datalist's own, then the unsplit ones stratified by class."""
        by_split = {name: [e for e in entries if e.split == name] for name in SPLIT_NAMES}
        unsplit = [e for e in entries if e.split is None]
        if unsplit:
            labels = np.array([e.label for e in unsplit])
            shares = np.array([1.0 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction])
            # One row per split, the same share for every class: split_like cuts each class in these proportions.
            weights = np.repeat(shares[:, None], labels.max() + 1, axis=1)
            parts = split_like(labels, weights, numpy_rng(self.seed, "datalist-split", stream))
            for name, part in zip(SPLIT_NAMES, parts, strict=True):
                by_split[name] += [unsplit[i] for i in part]
        return by_split


def _splits_of(
    entries: Sequence[DatalistEntry], splitter: DatalistSplitter, preprocessing: Preprocessing,
    cache_dir: Path | None, site: str, datalist: Path,
) -> dict[str, Split]:
    by_split = splitter.assign(entries, site)
    if not by_split["train"]:
        raise DataError(f"site {site!r}: {datalist}: no training images (every image is in val or test)")
    if not by_split["test"]:
        # Every site measures the model on its own test share; raise test_fraction or mark test rows.
        raise DataError(f"site {site!r}: {datalist}: no test images (mark some split = test, or raise test_fraction)")
    order = [e for name in SPLIT_NAMES for e in by_split[name]]
    masks = [e.mask for e in order if e.mask is not None]
    if masks:  # a segmentation datalist: every entry has its mask
        images, labels = load_images_with_masks([e.image for e in order], masks, preprocessing, cache_dir, site)
    else:
        images = load_images([e.image for e in order], preprocessing, cache_dir, site)
        labels = np.array([e.label for e in order], dtype=np.int64)
    splits, start = {}, 0
    for name in SPLIT_NAMES:
        stop = start + len(by_split[name])
        splits[name] = Split(images[start:stop], labels[start:stop])
        start = stop
    return splits


def _check_same_kind(sites: list[tuple[str, dict[str, Split]]]) -> None:
    """Every site's images must share dimensionality, channels and size: one model trains on them all."""
    first_name, first = sites[0]
    shape = first["train"].images.shape[1:]
    for name, splits in sites[1:]:
        other = splits["train"].images.shape[1:]
        if other != shape:
            raise DataError(
                f"site {name!r}: images of shape {'x'.join(map(str, other))} (channels first), but site "
                f"{first_name!r} has {'x'.join(map(str, shape))}; set data.size so every site brings its images "
                "to one size"
            )


def _check_disjoint(sites: Sequence[SiteDatalist], entries: Sequence[list[DatalistEntry]]) -> None:
    """No image may belong to two hospitals: one site's training image would be another's test image."""
    owner: dict[Path, str] = {}
    for site, listed in zip(sites, entries, strict=True):
        for entry in listed:
            real = entry.image.resolve()  # the same file under two names (a link) is the same patient
            if owner.get(real, site.name) != site.name:
                raise DataError(
                    f"site {site.name!r}: {site.datalist}: {entry.row} lists {entry.image}, which site "
                    f"{owner[real]!r} lists too; a patient's image belongs to one hospital"
                )
            owner[real] = site.name


@dataclass(frozen=True)
class SiteDatalists:
    """Per-site datalists: each site one hospital's files (the natural split; no partitioner)."""

    sites: tuple[SiteDatalist, ...]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    splitter: DatalistSplitter = field(default_factory=DatalistSplitter)
    cache_dir: Path | None = None
    masks: bool = False

    def site_splits(self) -> list[tuple[str, dict[str, Split]]]:
        """Every site's train, val and test splits, in site order (decoded or read from the cache)."""
        entries = [read_datalist(site.datalist, site.name, self.masks) for site in self.sites]
        _check_disjoint(self.sites, entries)  # before any image is decoded
        sites = []
        for site, listed in zip(self.sites, entries, strict=True):
            sites.append((site.name, _splits_of(
                listed, self.splitter, self.preprocessing, self.cache_dir, site.name, site.datalist
            )))
        _check_same_kind(sites)
        return sites

    def describe(self) -> str:
        """The sites' datalists, for messages."""
        return ", ".join(f"{s.name} ({s.datalist})" for s in self.sites)


@dataclass(frozen=True)
class PooledDatalist:
    """One datalist for a dataset not yet split by site: federated by the spec's partitioner."""

    datalist: Path
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    splitter: DatalistSplitter = field(default_factory=DatalistSplitter)
    cache_dir: Path | None = None
    masks: bool = False

    def load(self) -> ImageSplits:
        """The pooled splits (decoded or read from the cache)."""
        entries = read_datalist(self.datalist, "pooled", self.masks)
        splits = _splits_of(entries, self.splitter, self.preprocessing, self.cache_dir, "pooled", self.datalist)
        n_classes = n_classes_of([s.labels for s in splits.values()], str(self.datalist))
        return ImageSplits(train=splits["train"], val=splits["val"], test=splits["test"], n_classes=n_classes)

    def acquisition(self, site: int) -> None:
        """Real data: no simulated scanner."""
        return None

    def describe(self) -> str:
        """The datalist's path."""
        return str(self.datalist)
