"""The survey's experimental study: six ways to train on multi-site data, each judged on every site's test share.

Guan et al. ("Federated Learning for Medical Image Analysis: A Survey") compare,
on two-site brain MRI:

* **single**: each site trains on its own data and is tested on its own test share;
* **cross**: each site's model is tested on every *other* site's test share (the domain-shift penalty);
* **mix**: one model on all sites' data pooled (what privacy law forbids);
* **fedavg**, **fedsgd**, **fedprox**: the federation with weight averaging, gradient
  averaging, and weight averaging with a proximal term.

Every method trains on the same budget (rounds x local epochs of passes over
the data; FedSGD's is one gradient per round, its definition) with the same
local training, and returns, for each site's test share, the predictions that
judge it: the site's own model (single), the other sites' models (cross, all
of them pooled), the one model (mix, fedavg, fedsgd, fedprox; FedBN-style
private layers are not part of the study). Nothing here is private: the study
measures what federation buys in utility, without protection; the audit's
scenarios measure what protection costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from fedsecure.data.federated import FederatedData
from fedsecure.fl.baselines import baseline_training
from fedsecure.fl.evaluation import predict
from fedsecure.fl.federation import Federation
from fedsecure.fl.strategies import FedAvg, FedProx, FedSGD, Strategy
from fedsecure.fl.training import LocalTraining, train_local
from fedsecure.registry import Registry
from fedsecure.seeding import torch_generator

ModelFactory = Callable[[int], nn.Module]
"""A fresh model initialised from the given seed."""


@dataclass(frozen=True)
class StudyRun:
    """How every method of one repetition trains.

    Attributes:
        data: the sites (the same split for every method and seed).
        make_model: a fresh model from a seed.
        training: each site's local training in one round.
        rounds: federated rounds; the non-federated methods train ``rounds x epochs`` epochs.
        seed: this repetition's seed (model initialisation and batch order).
        device: where to train.
        mu: FedProx's proximal strength.
    """

    data: FederatedData
    make_model: ModelFactory
    training: LocalTraining
    rounds: int
    seed: int
    device: torch.device
    mu: float
    shared: dict[str, list[nn.Module]] = field(default_factory=dict, compare=False, repr=False)
    """Models two methods of this repetition share (single and cross judge the same site models)."""


@dataclass(frozen=True)
class MethodOutcome:
    """One method's predictions on each site's test share (with the labels they are judged against)."""

    per_site: list[tuple[torch.Tensor, torch.Tensor]]
    train_seconds: float


StudyMethod = Callable[[StudyRun], MethodOutcome]
STUDY_METHODS: Registry[StudyMethod] = Registry("study method")


def _test_share(run: StudyRun, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return run.data.sites[k].test.tensors(run.device)


def _predict_on(model: nn.Module, run: StudyRun, k: int) -> torch.Tensor:
    return predict(model, _test_share(run, k)[0], run.training.objective.eval_batch).cpu()


def _site_models(run: StudyRun) -> tuple[list[nn.Module], float]:
    """Each site's model trained on its own data alone, on the federation's whole budget (trained once per run)."""
    if "site" in run.shared:
        return run.shared["site"], 0.0
    models, started = [], time.perf_counter()
    budget = baseline_training(run.training, run.rounds)
    for k, site in enumerate(run.data.sites):
        model = run.make_model(run.seed).to(run.device)
        train_local(model, *site.train.tensors(run.device), budget, torch_generator(run.seed, "single", k))
        models.append(model)
    run.shared["site"] = models
    return models, time.perf_counter() - started


@STUDY_METHODS.register("single")
def single(run: StudyRun) -> MethodOutcome:
    """Each site's own model on its own test share."""
    models, seconds = _site_models(run)
    return MethodOutcome(
        [(_predict_on(model, run, k), _test_share(run, k)[1].cpu()) for k, model in enumerate(models)], seconds
    )


@STUDY_METHODS.register("cross")
def cross(run: StudyRun) -> MethodOutcome:
    """Every other site's model on a site's test share, their predictions pooled (each image once per model)."""
    models, seconds = _site_models(run)
    per_site = []
    for k in range(len(models)):
        others = [j for j in range(len(models)) if j != k]
        labels = _test_share(run, k)[1].cpu()
        per_site.append((torch.cat([_predict_on(models[j], run, k) for j in others]),
                         torch.cat([labels for _ in others])))
    return MethodOutcome(per_site, seconds)


@STUDY_METHODS.register("mix")
def mix(run: StudyRun) -> MethodOutcome:
    """One model on every site's training data pooled."""
    started = time.perf_counter()
    model = run.make_model(run.seed).to(run.device)
    train_local(model, *run.data.train.tensors(run.device), baseline_training(run.training, run.rounds),
                torch_generator(run.seed, "mix"))
    seconds = time.perf_counter() - started
    return MethodOutcome([(_predict_on(model, run, k), _test_share(run, k)[1].cpu())
                          for k in range(len(run.data.sites))], seconds)


def _federated(strategy: Strategy) -> StudyMethod:
    def train(run: StudyRun) -> MethodOutcome:
        started = time.perf_counter()
        federation = Federation(
            run.data, run.make_model(run.seed), strategy, training=run.training, rounds=run.rounds, seed=run.seed,
            device=run.device, keep_messages="none", keep_global_models=False, evaluate_every=0,
        )
        result = federation.run()
        seconds = time.perf_counter() - started
        model = result.released_model.to(run.device)
        return MethodOutcome([(_predict_on(model, run, k), _test_share(run, k)[1].cpu())
                              for k in range(len(run.data.sites))], seconds)

    return train


STUDY_METHODS.register("fedavg")(_federated(FedAvg()))
STUDY_METHODS.register("fedsgd")(_federated(FedSGD()))


@STUDY_METHODS.register("fedprox")
def fedprox(run: StudyRun) -> MethodOutcome:
    """The federation with FedProx's proximal term at the study's ``mu``."""
    return _federated(FedProx(mu=run.mu))(run)
