"""Size a study before it runs: what each DP scenario's noise will be, and what it will buy.

``fedsecure plan SPEC`` builds and calibrates every DP scenario exactly as the
audit does (the same data split, model, strategy and mechanism code), then
asks each mechanism for the guarantee it will report if every planned round
runs (:meth:`~fedsecure.fl.privacy_hooks.PrivacyMechanism.planned_report`).
Nothing is trained. Beside the epsilons it states how loud the noise is next
to the largest signal it hides, the ratio that decides whether a DP model
learns anything:

* sample-level DP: per DP-SGD step, on a site's averaged gradient, ``z * C / B``
  per coordinate against a clipped mean of norm at most ``C`` (``B`` the
  expected batch): noise-to-signal ``z * sqrt(d) / B``, for the worst site;
* client-level DP: per round, on the averaged update, ``z * C / m`` per
  coordinate for ``m`` sites per round, against a mean of norm at most ``C``:
  noise-to-signal ``z * sqrt(d) / m``; and, given a target ratio, the fewest
  sites (of the median site's size) that would reach it, each calibrated anew.

``d`` is the length of a site's message (the shared model state; SCAFFOLD
sends twice that). The ratio is an upper bound's view: a real update's norm
is often below the clip, which makes it worse.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from fedsecure.config.parts import build_parts_on
from fedsecure.config.spec import AuditSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.errors import SpecError
from fedsecure.fl.privacy_hooks import FederationFacts, PrivacyReport
from fedsecure.fl.server import participation_share
from fedsecure.fl.training import LocalTraining

_MOST_SITES = 1_000_000  # the search for enough sites stops here


@dataclass(frozen=True)
class DPPlan:
    """One DP scenario, planned.

    Attributes:
        scenario: its name.
        level: "sample" or "client".
        target_epsilon: the spec's epsilon.
        delta: the spec's delta.
        epsilon: the headline epsilon the audit will report (None where a party sees the data before any noise).
        by_adversary: party -> epsilon (None: no DP against that party).
        noise_multiplier: the noise in units of the clip (sample: the worst site's; client: on the update).
        message_length: the values the noise covers (d): the trainable parameters (sample-level), the
            message (client-level; SCAFFOLD's is twice the model).
        noise_per_coordinate: standard deviation of the noise on one coordinate (see ``noise_on``).
        noise_on: what ``noise_per_coordinate`` is measured on, in words.
        noise_to_signal: the noise's norm over the largest norm of the signal it hides.
        sites_for_target: client-level DP with a target ratio: the fewest sites that reach it (None: not asked,
            or not reached below a million sites).
        notes: what the plan assumes.
    """

    scenario: str
    level: str
    target_epsilon: float
    delta: float
    epsilon: float | None
    by_adversary: dict[str, float | None]
    noise_multiplier: float
    message_length: int
    noise_per_coordinate: float
    noise_on: str
    noise_to_signal: float
    sites_for_target: int | None = None
    notes: list[str] = field(default_factory=list)


def plan_study(spec: AuditSpec, data: FederatedData, noise_to_signal: float | None = None) -> list[DPPlan]:
    """Every DP scenario of ``spec`` on ``data``, calibrated as the audit will calibrate it, planned.

    Args:
        spec: the audit spec.
        data: the spec's federated data (its sites' sizes decide the noise).
        noise_to_signal: for client-level DP, find how many sites bring the ratio under this.

    Raises:
        SpecError: naming the scenario whose budget no noise can keep.
    """
    plans = []
    cpu = torch.device("cpu")
    for scenario in spec.scenario:
        if scenario.dp is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the scenario's own warnings come when it runs
            try:
                parts = build_parts_on(spec, scenario, data, cpu)
            except SpecError as exc:
                raise SpecError(f"scenario {scenario.name}: {exc}") from None
            report = parts.privacy.planned_report()
        assert report is not None
        if scenario.dp.level == "sample":
            # DP-SGD's noise goes on every trainable parameter, the site's own layers included.
            trainable = sum(p.numel() for p in parts.state.model.parameters() if p.requires_grad)
            plan = _sample_plan(scenario, report, trainable, [site.n_train for site in data.sites])
        else:
            length = parts.strategy.message_length(parts.state.numel)
            plan = _client_plan(spec, scenario, report, length, parts.training, noise_to_signal, data)
        if spec.federation.clients_per_round is not None:
            plan.notes.append("sites are sampled each round: the audit reports at most this epsilon (it counts "
                              "the rounds each site took part in)")
        plans.append(plan)
    return plans


def noise_to_signal(noise_multiplier: float, length: int, averaged_over: float) -> float:
    """The noise's norm on a mean of clipped contributions over the largest norm of that mean (the clip).

    Noise ``z C / m`` on each of ``length`` coordinates of a mean over ``m``; the mean's norm is at most ``C``.
    """
    return noise_multiplier * math.sqrt(length) / averaged_over


def _common(scenario: ScenarioSpec, report: PrivacyReport) -> dict:
    assert scenario.dp is not None
    return {
        "scenario": scenario.name, "level": scenario.dp.level, "target_epsilon": scenario.dp.epsilon,
        "delta": scenario.dp.delta, "epsilon": report.epsilon,
        "by_adversary": {g.party: g.epsilon for g in report.by_adversary},
    }


def _sample_plan(scenario: ScenarioSpec, report: PrivacyReport, length: int, sizes: list[int]) -> DPPlan:
    assert scenario.dp is not None and report.per_site is not None
    clip = scenario.dp.clip

    def batch(site: dict) -> float:
        # Opacus averages the clipped gradients over its expected batch, int(rate x images).
        return float(max(1, int(sizes[site["site"]] * site["sample_rate"])))

    def ratio(site: dict) -> float:
        return noise_to_signal(float(site["noise_multiplier"]), length, batch(site))

    worst = max(report.per_site, key=ratio)
    return DPPlan(
        **_common(scenario, report), noise_multiplier=float(worst["noise_multiplier"]), message_length=length,
        noise_per_coordinate=float(worst["noise_multiplier"]) * clip / batch(worst),
        noise_on=(f"each DP-SGD step's averaged gradient at site {worst['site']} (expected batch "
                  f"{batch(worst):.3g} of its {sizes[worst['site']]} images)"),
        noise_to_signal=ratio(worst),
        notes=["per step; a round sums its steps' noise and signal alike"],
    )


def _client_plan(
    spec: AuditSpec, scenario: ScenarioSpec, report: PrivacyReport, length: int, training: LocalTraining,
    target: float | None, data: FederatedData,
) -> DPPlan:
    assert scenario.dp is not None and report.mechanism is not None
    per_round = spec.federation.clients_per_round or spec.data.sites
    noise = float(report.mechanism["update_noise_multiplier"])
    ratio = noise_to_signal(noise, length, per_round)
    sites = None
    notes = [f"{per_round} site(s) per round"]
    if report.mechanism.get("count_noise_stddev") is not None:
        notes.append("adaptive clipping: the noise is the initial clip's; it follows the clip")
    if target is not None:
        sizes = sorted(site.n_train for site in data.sites)
        sites = _sites_for(scenario, spec, training, sizes[len(sizes) // 2], length, target)
        if sites is None:
            notes.append("no count of sites up to a million reaches the target")
        notes.append(f"sites for a noise-to-signal of {target:g}: each of {sizes[len(sizes) // 2]} images "
                     "(the median site), the same share per round, every count calibrated anew")
    return DPPlan(
        **_common(scenario, report), noise_multiplier=noise, message_length=length,
        noise_per_coordinate=noise * scenario.dp.clip / per_round,
        noise_on=f"each round's averaged update ({per_round} site(s), each clipped to {scenario.dp.clip:g})",
        noise_to_signal=ratio, sites_for_target=sites, notes=notes,
    )


def _sites_for(
    scenario: ScenarioSpec, spec: AuditSpec, training: LocalTraining, site_size: int, length: int, target: float
) -> int | None:
    """The fewest sites whose calibrated noise-to-signal is at most ``target`` (None: not below a million)."""
    share = participation_share(spec.federation.clients_per_round, spec.data.sites)

    def ratio(sites: int) -> float:
        assert scenario.dp is not None
        per_round = max(1, round(share * sites))
        mechanism = scenario.dp.mechanism()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mechanism.calibrate(FederationFacts(
                site_sizes=[site_size] * sites, rounds=spec.federation.rounds, training=training,
                clients_per_round=per_round if per_round < sites else None, seed=spec.seed,
                device=torch.device("cpu"), updates_hidden=scenario.protocol_instance().hides_updates,
            ))
        return noise_to_signal(mechanism.update_noise_multiplier, length, per_round)

    fewest = max(1, (scenario.dp.min_sites if scenario.dp is not None else None) or 1)  # distributed noise's quorum
    if ratio(fewest) <= target:
        return fewest
    low, high = fewest, 2 * fewest
    while ratio(high) > target:
        low, high = high, high * 2
        if high > _MOST_SITES:
            return None
    while high - low > 1:  # ratio(low) > target >= ratio(high): the ratio falls as sites are added
        middle = (low + high) // 2
        low, high = (middle, high) if ratio(middle) > target else (low, middle)
    return high
