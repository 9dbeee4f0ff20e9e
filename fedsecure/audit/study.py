"""Run the spec's ``[study]``: every method, every seed, judged per site, with the survey's findings tested.

The methods are :data:`fedsecure.fl.study.STUDY_METHODS`. The pooled metric of a
method pools every site's test-share predictions (the audit's global utility);
its interval is a two-sided Student t interval over the seeds, clipped to the metric's range [0, 1]. The survey's
findings are tested pairwise over (seed, site): each pair is one method's
metric on one site's test share in one seed against the other's, with the
Wilcoxon signed-rank test (two-sided; exact for few pairs, as SciPy chooses),
which assumes nothing of the differences' distribution but their symmetry.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from statistics import fmean, stdev

import numpy as np
import torch
from scipy import stats

from fedsecure.config.spec import AuditSpec
from fedsecure.data.federated import FederatedData
from fedsecure.fl.study import STUDY_METHODS, MethodOutcome, StudyRun
from fedsecure.fl.task import TASKS
from fedsecure.models import build_model
from fedsecure.report.study_finding import StudyComparison, StudyFinding, StudyMethodFinding, StudySiteValue

DESCRIPTIONS = {
    "single": "each site's own model, on its own test share",
    "cross": "every other site's model, on a site's test share",
    "mix": "one model on all sites' data pooled",
    "fedavg": "federated, weights averaged (FedAvg)",
    "fedsgd": "federated, one gradient per round averaged (FedSGD)",
    "fedprox": "federated, weights averaged with a proximal term (FedProx)",
}

# The survey's findings, as (better, worse) pairs: Mix best, Cross worst, federated above Single and Cross,
# weight averaging above gradient averaging; FedProx against Single beside FedAvg's.
FINDINGS = [("mix", "fedavg"), ("fedavg", "single"), ("fedprox", "single"), ("fedavg", "cross"),
            ("single", "cross"), ("fedavg", "fedsgd")]
TEST_NAME = "Wilcoxon signed-rank, two-sided, paired over (seed, site)"


def run_study(
    spec: AuditSpec, data: FederatedData, device: torch.device,
    on_step: Callable[[str], None] | None = None,
) -> StudyFinding:
    """The spec's study on ``data`` (``spec.study`` must be set).

    Args:
        spec: the audit spec.
        data: its federated data.
        device: where to train.
        on_step: called after each (seed, method) with its name.
    """
    study = spec.study
    assert study is not None, "the spec has no [study]"
    started = time.perf_counter()
    task = TASKS.get(spec.data.task)
    seeds = [spec.seed + k for k in range(study.seeds)]
    training = spec.federation.local_training(spec.data.task)

    def make_model(seed: int) -> torch.nn.Module:
        return build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, seed)

    outcomes: dict[str, list[MethodOutcome]] = {name: [] for name in study.methods}
    for seed in seeds:
        run = StudyRun(data=data, make_model=make_model, training=training, rounds=spec.federation.rounds,
                       seed=seed, device=device, mu=study.mu)
        for name in study.methods:
            outcomes[name].append(STUDY_METHODS.get(name)(run))
            if on_step is not None:
                on_step(name)

    def metric(predictions: list[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
        value = getattr(task.utility(torch.cat([p for p, _ in predictions]), torch.cat([y for _, y in predictions])),
                        task.metric)
        return None if value is None or not math.isfinite(value) else float(value)

    sites = [site.name for site in data.sites]
    methods = []
    for name, runs in outcomes.items():
        pooled = [metric(outcome.per_site) for outcome in runs]
        per_site = []
        for k, site in enumerate(sites):
            values = [metric([outcome.per_site[k]]) for outcome in runs]
            defined = [v for v in values if v is not None]
            per_site.append(StudySiteValue(site, fmean(defined) if defined else None, values))
        defined = [v for v in pooled if v is not None]
        site_means = [fmean(d) for seed in range(len(runs))
                      if (d := [v.per_seed[seed] for v in per_site if v.per_seed[seed] is not None])]
        methods.append(StudyMethodFinding(
            name=name, description=DESCRIPTIONS[name], mean=fmean(defined) if defined else None,
            interval=_within_metric_range(t_interval(defined, study.confidence)), per_seed=pooled, per_site=per_site,
            train_seconds=sum(outcome.train_seconds for outcome in runs),
            site_mean=fmean(site_means) if site_means else None,
        ))
    by_name = {m.name: m for m in methods}
    comparisons = [paired_test(by_name[a], by_name[b]) for a, b in FINDINGS if a in by_name and b in by_name]
    notes = [
        f"{len(seeds)} seed(s) ({', '.join(map(str, seeds))}): each sets the models' initialisation and batch "
        "order; the sites' split is the spec's, the same for every method and seed",
        f"every method trains {spec.federation.rounds} rounds x {training.epochs} local epoch(s) of passes over "
        "its data (FedSGD: one full-batch gradient per round), without protection",
    ]
    if {"single", "cross"} & set(study.methods):
        notes.append(
            "single and cross pool the scores of several models (one per site) into their pooled metric; under "
            "label skew each site's model learns its site's class prior, so that figure also rewards telling the "
            "sites apart: compare them by the per-site values and the mean over sites"
        )
    notes.append(
        "the paired tests treat every (seed, site) pair as one observation, but within a seed one federated or "
        "pooled model judges every site: the pairs are not independent, so the p-values are optimistic; the "
        "direction column says only which way the mean difference goes"
    )
    undefined = sorted({s.site for m in methods for s in m.per_site if any(v is None for v in s.per_seed)})
    if undefined:
        notes.append(f"{task.metric} is undefined on the test share of {', '.join(undefined)} (e.g. one class "
                     "only); those values are left out of the means and of the paired tests")
    return StudyFinding(metric=task.metric, seeds=seeds, confidence=study.confidence, methods=methods,
                        comparisons=comparisons, wall_seconds=time.perf_counter() - started, notes=notes)


def t_interval(values: list[float], confidence: float) -> list[float] | None:
    """The two-sided Student t interval of the mean of ``values`` (None with fewer than two)."""
    if len(values) < 2:
        return None
    mean, half = fmean(values), 0.0
    spread = stdev(values)
    if spread > 0:
        half = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * spread / math.sqrt(len(values))
    return [mean - half, mean + half]


def _within_metric_range(interval: list[float] | None) -> list[float] | None:
    # AUC and Dice lie in [0, 1]; a t interval over few seeds can reach past either end.
    return None if interval is None else [max(interval[0], 0.0), min(interval[1], 1.0)]


def paired_test(better: StudyMethodFinding, worse: StudyMethodFinding) -> StudyComparison:
    """``better`` against ``worse``, paired over every (seed, site) where both are defined."""
    differences = [
        a - b
        for mine, theirs in zip(better.per_site, worse.per_site, strict=True)
        for a, b in zip(mine.per_seed, theirs.per_seed, strict=True)
        if a is not None and b is not None
    ]
    statistic = p_value = None
    if differences and any(d != 0 for d in differences):
        result = stats.wilcoxon(np.array(differences), alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    mean = fmean(differences) if differences else None
    return StudyComparison(
        better=better.name, worse=worse.name, test=TEST_NAME, n_pairs=len(differences), mean_difference=mean,
        statistic=statistic, p_value=p_value, holds=None if mean is None else mean > 0,
    )
