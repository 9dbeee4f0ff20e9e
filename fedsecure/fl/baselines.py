"""The two reference points of every federated study (Rieke et al. 2020; Kaissis et al. 2020).

* **centralized**: all sites' training data pooled in one place, the upper
  bound that privacy law forbids;
* **local-only**: each site trains alone on its own data, the lower bound
  federation must beat to be worth its risk.

Both train with the same local-training routine and the same budget of
passes over the data as the federation (rounds x local epochs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from statistics import fmean

import torch
from torch import nn

from fedsecure.data.federated import FederatedData, SiteData
from fedsecure.devices import Stopwatch
from fedsecure.fl.evaluation import Utility
from fedsecure.fl.server import SiteUtility
from fedsecure.fl.task import evaluate
from fedsecure.fl.training import LocalTraining, train_local
from fedsecure.seeding import torch_generator


@dataclass(frozen=True)
class CentralizedResult:
    """The pooled-data model's utility: whole test set and each site's local test set."""

    utility: Utility
    per_site: list[SiteUtility]
    train_seconds: float


@dataclass(frozen=True)
class LocalOnlyResult:
    """Each site's own model.

    Attributes:
        auc: mean over sites of each local model's AUC on the whole test set
            (comparable with a federated model's global AUC); None if undefined.
        accuracy: the same mean for accuracy.
        dice: the same mean for Dice (segmentation; None otherwise).
        per_site: each local model on its own site's local test set.
        per_site_on_test: each local model on the whole test set.
    """

    auc: float | None
    accuracy: float
    per_site: list[SiteUtility]
    per_site_on_test: list[Utility]
    train_seconds: float
    dice: float | None = None


ModelFactory = Callable[[], nn.Module]


def train_centralized(
    data: FederatedData,
    make_model: ModelFactory,
    training: LocalTraining,
    seed: int,
    device: torch.device | str = "cpu",
) -> CentralizedResult:
    """Train one model on all sites' data pooled, for ``training.epochs`` epochs."""
    model = make_model().to(device)
    images, labels = data.train.tensors(device)
    clock = Stopwatch(torch.device(device))
    with clock.measure():
        train_local(model, images, labels, training, torch_generator(seed, "centralized"))
    return CentralizedResult(
        utility=evaluate(model, *data.test.tensors(device), training.objective),
        per_site=[_site_utility(model, site, training, device) for site in data.sites],
        train_seconds=clock.seconds,
    )


def train_local_only(
    data: FederatedData,
    make_model: ModelFactory,
    training: LocalTraining,
    seed: int,
    device: torch.device | str = "cpu",
    on_site: Callable[[str], None] | None = None,
) -> LocalOnlyResult:
    """Train one model per site on that site's data alone, for ``training.epochs`` epochs."""
    test = data.test.tensors(device)
    per_site, on_test = [], []
    clock = Stopwatch(torch.device(device))
    for k, site in enumerate(data.sites):
        model = make_model().to(device)
        with clock.measure():
            train_local(model, *site.train.tensors(device), training, torch_generator(seed, "local-only", k))
        per_site.append(_site_utility(model, site, training, device))
        on_test.append(evaluate(model, *test, training.objective))
        if on_site is not None:
            on_site(site.name)
    return LocalOnlyResult(
        auc=_mean_of([u.auc for u in on_test]),
        accuracy=fmean(u.accuracy for u in on_test),
        per_site=per_site,
        per_site_on_test=on_test,
        train_seconds=clock.seconds,
        dice=_mean_of([u.dice for u in on_test]),
    )


def _mean_of(values: list[float | None]) -> float | None:
    """The mean, or None when any site's value is undefined."""
    return fmean(values) if all(v is not None for v in values) else None  # type: ignore[arg-type]


def baseline_training(training: LocalTraining, rounds: int) -> LocalTraining:
    """The federation's local training stretched to its whole budget: rounds x local epochs."""
    return replace(training, epochs=training.epochs * rounds)


def _site_utility(model: nn.Module, site: SiteData, training: LocalTraining, device: torch.device | str) -> SiteUtility:
    return SiteUtility.of(site.name, site.n_train, evaluate(model, *site.test.tensors(device), training.objective))
