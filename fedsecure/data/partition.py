"""Partitioners: how a pooled training set is split across sites.

Pure functions of (labels, number of sites, generator): every sample goes to
exactly one site, and the same generator state gives the same split. The
label-skew scheme is the per-class Dirichlet split of Hsu et al. 2019 as used
in NIID-Bench (Li et al. 2022); quantity skew draws site sizes from a
Dirichlet. :func:`split_like` splits a test set so that each site's local test
set follows that site's training label distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsecure.errors import DataError
from fedsecure.registry import Registry

Partition = list[np.ndarray]
"""One int64 index array per site."""

PARTITIONERS: Registry[type] = Registry("partition")

_MAX_DIRICHLET_DRAWS = 1000


def _check_feasible(n_samples: int, n_sites: int, min_size: int) -> None:
    if n_sites < 1:
        raise DataError(f"number of sites must be >= 1, got {n_sites}")
    if n_samples < n_sites * min_size:
        raise DataError(
            f"cannot split {n_samples} samples into {n_sites} sites with at least {min_size} each"
        )


@PARTITIONERS.register("iid")
@dataclass(frozen=True)
class IID:
    """Uniformly random split into sites of (almost) equal size."""

    min_size: int = 1

    def split(self, labels: np.ndarray, n_sites: int, rng: np.random.Generator) -> Partition:
        """Split ``range(len(labels))`` across ``n_sites``."""
        _check_feasible(len(labels), n_sites, self.min_size)
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), n_sites)]


@dataclass(frozen=True)
class _DirichletSkew:
    """Shared settings of the Dirichlet-based partitioners."""

    alpha: float = 0.5
    min_size: int = 1

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise DataError(f"{type(self).__name__.lower()} alpha must be > 0, got {self.alpha}")


@PARTITIONERS.register("dirichlet")
@dataclass(frozen=True)
class Dirichlet(_DirichletSkew):
    """Label skew: each class is spread over sites in Dirichlet(alpha) proportions.

    Small ``alpha`` (0.1) gives sites dominated by one class; large ``alpha``
    (100) approaches iid. Draws are repeated until every site holds at least
    ``min_size`` samples.
    """

    def split(self, labels: np.ndarray, n_sites: int, rng: np.random.Generator) -> Partition:
        """Split ``range(len(labels))`` across ``n_sites``."""
        n = len(labels)
        _check_feasible(n, n_sites, self.min_size)
        classes = np.unique(labels)
        for _ in range(_MAX_DIRICHLET_DRAWS):
            parts: list[list[np.ndarray]] = [[] for _ in range(n_sites)]
            sizes = np.zeros(n_sites, dtype=np.int64)
            for c in classes:
                members = rng.permutation(np.flatnonzero(labels == c))
                share = rng.dirichlet(np.full(n_sites, self.alpha))
                # Sites already holding their fair share get no more of this
                # class, which keeps site sizes from drifting apart (NIID-Bench).
                share = share * (sizes < n / n_sites)
                share = share / share.sum() if share.sum() > 0 else np.full(n_sites, 1.0 / n_sites)
                cuts = (np.cumsum(share) * len(members)).astype(np.int64)[:-1]
                for site, chunk in enumerate(np.split(members, cuts)):
                    parts[site].append(chunk)
                    sizes[site] += len(chunk)
            if sizes.min() >= self.min_size:
                return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]
        raise DataError(
            f"dirichlet(alpha={self.alpha}) gave a site with fewer than {self.min_size} samples "
            f"in {_MAX_DIRICHLET_DRAWS} draws; raise alpha or lower the number of sites"
        )


@PARTITIONERS.register("quantity")
@dataclass(frozen=True)
class Quantity(_DirichletSkew):
    """Quantity skew: site sizes in Dirichlet(alpha) proportions, labels iid within a site."""

    def split(self, labels: np.ndarray, n_sites: int, rng: np.random.Generator) -> Partition:
        """Split ``range(len(labels))`` across ``n_sites``."""
        n = len(labels)
        _check_feasible(n, n_sites, self.min_size)
        share = rng.dirichlet(np.full(n_sites, self.alpha))
        sizes = self.min_size + rng.multinomial(n - n_sites * self.min_size, share)
        cuts = np.cumsum(sizes)[:-1]
        return [np.sort(part) for part in np.split(rng.permutation(n), cuts)]


def split_like(labels: np.ndarray, site_class_counts: np.ndarray, rng: np.random.Generator) -> Partition:
    """Split a test set so each site's share follows its training label mix.

    Every sample of class ``c`` goes to one site, sites receiving class ``c`` in
    proportion to ``site_class_counts[:, c]`` (largest-remainder rounding). A
    class no site trained on is spread evenly.

    Args:
        labels: the test labels (N,).
        site_class_counts: (n_sites, n_classes) training label counts per site.
        rng: the generator that shuffles samples within a class.
    """
    n_sites, n_classes = site_class_counts.shape
    parts: list[list[np.ndarray]] = [[] for _ in range(n_sites)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        weights = site_class_counts[:, c].astype(np.float64) if c < n_classes else np.zeros(n_sites)
        if weights.sum() == 0:
            weights = np.ones(n_sites)
        exact = weights / weights.sum() * len(members)
        counts = np.floor(exact).astype(np.int64)
        remainder = len(members) - counts.sum()
        counts[np.argsort(-(exact - counts), kind="stable")[:remainder]] += 1
        for site, chunk in enumerate(np.split(members, np.cumsum(counts)[:-1])):
            parts[site].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, np.int64) for p in parts]
