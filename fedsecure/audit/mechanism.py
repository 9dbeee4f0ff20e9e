"""The mechanism audit: does a DP scenario's privacy code add the noise its accountant assumes?

From the server's seat, the auditor has the scenario's privacy mechanism
(built and calibrated as the run builds it) run one site's pipeline for one
round many times without and with a canary (:meth:`PrivacyMechanism.canary_trials`),
scores every trial with a few statistics, and bounds the noise multiplier the
outputs are consistent with (:func:`attacks.mechanism_audit.audit_two_samples`,
on the trade-off curves of the family the accountant composes). The
accountant turns that bound into an epsilon exactly as it turns the claimed
noise: per round, and composed over the whole run as the run composes it. A
correct implementation gives a lower bound at most the claimed epsilon (with
probability at least the confidence, if its trade-off curve is in the
family); a larger one means a bug is likely. The "lower bound" is in the
accountant's own terms: the epsilon the accountant gives the most noise the
trials allow; exceeding the claim is exactly the claimed noise being ruled out.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from attacks.mechanism_audit import SubsampledGaussianFamily, audit_two_samples
from fedsecure.audit.canary_clients import audit_canary_clients
from fedsecure.config.parts import build_parts_on
from fedsecure.config.spec import AuditSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.fl.federation import Federation
from fedsecure.fl.privacy_hooks import CanaryTrials
from fedsecure.privacy.accounting import spent_epsilon
from fedsecure.report.mechanism_finding import MechanismAuditFinding, MechanismCheck
from fedsecure.seeding import derive_seed

DEFAULT_TRIALS = {"sample": 20_000, "client": 200_000}
# Directions (in units of each channel's noise) tried when a step has two channels: the update and the count.
_ANGLES = np.linspace(0.0, math.pi / 2, 7)


def audit_mechanism(
    spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData,
    build_federation: Callable[..., Federation] | None = None,
) -> MechanismAuditFinding | None:
    """The mechanism audit of one scenario (None without DP or without ``[attacks] mechanism``).

    It runs on the CPU, where the privacy pipeline draws its noise. ``build_federation`` (the
    scenario's federation on given data, keyword overrides to :class:`Federation`) is needed for
    canary clients.
    """
    options = spec.attacks.mechanism
    if options is None or scenario.dp is None:
        return None
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scenario's own run says what its settings weaken
        parts = build_parts_on(spec, scenario, data, torch.device("cpu"))
        trials = options.trials or DEFAULT_TRIALS[scenario.dp.level]
        seed = options.seed if options.seed is not None else derive_seed(spec.seed, "mechanism", scenario.name)
        found = parts.privacy.canary_trials(data.sites[options.site].n_train, trials, seed)
    checks = [
        check_trials(kind, confidence=1 - (1 - options.confidence) / len(found), seed=derive_seed(seed, "split", i))
        for i, kind in enumerate(found)
    ]
    clients = None
    if options.canary_clients and scenario.dp.level == "client":
        if build_federation is None:
            raise ValueError("canary clients need the scenario's build_federation")
        clients = audit_canary_clients(
            data, build_federation, clients=options.canary_clients, unseen=options.unseen_canaries,
            norm=scenario.dp.clip, delta=scenario.dp.delta, confidence=options.confidence,
            seed=derive_seed(seed, "canary-clients"),
        )
    return MechanismAuditFinding(
        level=scenario.dp.level, site=options.site, confidence=options.confidence, checks=checks,
        wall_seconds=time.perf_counter() - started, canary_clients=clients,
    )


def check_trials(trials: CanaryTrials, confidence: float, seed: int) -> MechanismCheck:
    """Bound the noise ``trials`` are consistent with and turn it into epsilons with the trials' accountant."""
    family = SubsampledGaussianFamily(trials.sample_rate, int(trials.signal.any(axis=1).sum()))
    without, with_canary = statistics(trials, family, trials.without), statistics(trials, family, trials.with_canary)
    bound = audit_two_samples(without, with_canary, family, confidence=confidence, seed=seed)
    ceiling = audit_two_samples(*_told_apart(len(trials.without)), family, confidence=confidence, seed=seed)

    def per_round(noise: float) -> float:
        return _epsilon([(noise, trials.sample_rate, trials.steps_per_round)], trials)

    def whole_run(noise: float) -> float:
        # The run's composition with the audited noise in place of the claimed one.
        return _epsilon([(noise, rate, steps) for _, rate, steps in trials.whole_run], trials)

    return MechanismCheck(
        canary=trials.canary, observer=trials.observer, trials=len(trials.without), statistic=bound.statistic,
        false_positives=bound.false_positives, negatives=bound.negatives, false_negatives=bound.false_negatives,
        positives=bound.positives, confidence=confidence, claimed_noise_multiplier=trials.noise_multiplier,
        noise_multiplier_bound=_finite(bound.noise_upper), sample_rate=trials.sample_rate,
        steps_per_round=trials.steps_per_round,
        per_round_claimed=per_round(trials.noise_multiplier), per_round_lb=per_round(bound.noise_upper),
        per_round_estimate=per_round(bound.noise_estimate), per_round_ub=per_round(bound.noise_lower),
        per_round_ceiling=per_round(ceiling.noise_upper),
        whole_run_claimed=_epsilon(trials.whole_run, trials), whole_run_lb=whole_run(bound.noise_upper),
        whole_run_estimate=whole_run(bound.noise_estimate), whole_run_ceiling=whole_run(ceiling.noise_upper),
        assumptions=[
            *trials.assumptions,
            "the pipeline's trade-off curve is one of the family the accountant composes (Gaussian steps, each "
            f"taken with probability {trials.sample_rate:.3g}); a pipeline outside it is caught when its measured "
            "rates lie below every curve the claimed noise allows",
        ],
    )


def statistics(trials: CanaryTrials, family: SubsampledGaussianFamily, outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Each trial's score (higher: canary in) under the statistics the audit chooses from.

    * "likelihood ratio": the optimal test were the pipeline what the
      accountant assumes (steps projected on the canary's signal, weighted by
      the claimed noise);
    * "sum": the projected steps summed (robust to a wrong sampling rate);
    * "direction k": with two channels (update and adaptive-clipping count),
      standardized channels weighted at angle k/6 x 90 degrees (robust to a
      wrong sensitivity of either);
    * "spread across steps": the largest minus the smallest projected step,
      over every step observed (noise that repeats leaves none).
    """
    active = trials.signal.any(axis=1)
    weights = trials.signal / trials.noise_std**2  # per step and channel: the claimed optimal projection
    first = int(np.argmax(active))
    projection = weights[first] / float(weights[first] @ trials.signal[first])  # a canary step projects to 1
    projected = outputs @ projection  # (trials, steps)
    effective_noise = float(np.sqrt(projection**2 @ trials.noise_std**2))
    found = {"likelihood ratio": family.log_likelihood_ratio(projected[:, active], effective_noise)}
    if active.sum() > 1:
        found["sum"] = projected[:, active].sum(axis=1)
    if trials.signal.shape[1] == 2:
        standardized = outputs[:, active, :] / trials.noise_std
        for k, angle in enumerate(_ANGLES):
            found[f"direction {k}"] = (standardized @ np.array([math.cos(angle), math.sin(angle)])).sum(axis=1)
    if outputs.shape[1] > 1:
        found["spread across steps"] = projected.max(axis=1) - projected.min(axis=1)
    return found


def _told_apart(trials: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scores of an audit that tells every trial apart: what the counts alone allow (the ceiling)."""
    return {"perfect": np.zeros(trials)}, {"perfect": np.ones(trials)}


# Below this noise multiplier the accountants' numerics break down (PRV overflows, RDP's orders run out): the
# mechanism then protects nothing worth a number, and its epsilon is reported as unbounded.
_LEAST_NOISE = 0.05


def _epsilon(history: list[tuple[float, float, int]], trials: CanaryTrials) -> float:
    """The accountant's epsilon for ``history`` (inf below ``_LEAST_NOISE`` or where the accountant gives up)."""
    if any(math.isinf(noise) for noise, _, _ in history):
        return 0.0  # nothing ruled out: no evidence of any epsilon
    if any(noise < _LEAST_NOISE for noise, _, _ in history):
        return math.inf
    with warnings.catch_warnings():
        # RDP's note that its best order is the smallest it tries: at tiny noise the bound is loose; it is the
        # same accountant the claim uses, which is what the comparison needs.
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        try:
            return spent_epsilon(history, trials.delta, trials.accountant)
        except (ArithmeticError, RuntimeError, ValueError):
            return math.inf  # the accountant's numerics failed on very little noise: nothing it could bound


def _finite(noise: float) -> float:
    return noise if math.isfinite(noise) else math.nan

