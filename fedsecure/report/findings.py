"""Typed results of an audit, and their JSON form (the report contract).

``report.json`` is the source of truth: renderers read it, never the live
objects, so a report can be re-rendered without re-running anything.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from attacks.auditing import OneRunAudit
from fedsecure.fl.server import SiteUtility

SCHEMA_VERSION = "1.3"


@dataclass(frozen=True)
class UtilityFinding:
    """A model's test utility: whole test set and each site's local test set."""

    auc: float | None
    accuracy: float
    per_site: list[SiteUtility]


@dataclass(frozen=True)
class LocalOnlyFinding(UtilityFinding):
    """Local-only baseline: ``auc``/``accuracy`` are the mean of the sites' own models on the whole test set."""

    per_site_on_test: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class PrivacyFinding:
    """The formal guarantee (None where the scenario has no differential privacy).

    ``guarantee`` is "none", "sample-level DP" or "client-level DP"; ``unit`` what
    one unit of privacy is (a patient's record, or a whole site). For
    sample-level DP the figures are the worst site's and ``per_site`` lists all.
    ``stopped_early`` says training ended before the planned rounds because the
    next round would have overspent ``target_epsilon``.

    ``epsilon`` is the headline: the largest of ``epsilon_by_adversary`` (the
    guarantee against the public, the server and another site, each with what
    that party sees and what the bound assumes), against ``worst_party``; None
    where some party sees the data before any noise. ``mechanism`` holds what
    a reviewer needs to recompute it. ``simulation`` is true when the noise
    derives from the spec's seed: no epsilon is then a guarantee.
    ``protected_units`` counts the units (images or sites) the guarantee covers.

    ``empirical_epsilon_lb`` is the one pre-registered lower bound (the canary
    audit's, at ``empirical_confidence``); ``empirical_epsilon_ceiling`` the
    largest value that audit could have shown with its canaries and guesses
    (0 where attacks ran but no randomised canaries did: membership of real
    training data is not randomised, so it bounds no epsilon).
    """

    guarantee: str = "none"
    unit: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    sample_rate: float | None = None
    steps: int | None = None
    accountant: str | None = None
    empirical_epsilon_lb: float | None = None
    canary_audit: CanaryAuditFinding | None = None
    target_epsilon: float | None = None
    secure_rng: bool | None = None
    stopped_early: bool = False
    rounds_completed: int | None = None
    warnings: list[str] = field(default_factory=list)
    per_site: list[dict[str, Any]] | None = None
    clip_per_round: list[float] | None = None
    epsilon_by_adversary: dict[str, dict[str, Any]] | None = None
    worst_party: str | None = None
    mechanism: dict[str, Any] | None = None
    simulation: bool = False
    protected_units: int | None = None
    empirical_epsilon_ceiling: float | None = None
    empirical_confidence: float | None = None


@dataclass(frozen=True)
class CostFinding:
    """What the protection and the training cost.

    ``bytes_up_per_round`` is what all sites send the server in one round
    (mean over rounds); ``bytes_down_per_round`` what the server sends all sites.
    ``protect_seconds`` = encrypt (every site's ``protect``) + aggregate (the
    server's ``combine``) + decrypt (every site's ``reveal``), summed over rounds.
    ``bytes_per_parameter`` is one site's message size over the update's length.
    """

    train_seconds: float
    protect_seconds: float
    bytes_up_per_round: float
    bytes_down_per_round: float
    wall_seconds: float
    encrypt_seconds: float
    aggregate_seconds: float
    decrypt_seconds: float
    setup_bytes: int
    bytes_per_parameter: float


@dataclass(frozen=True)
class RoundFinding:
    """One round's global utility and costs."""

    round: int
    participants: list[str]
    epsilon: float | None
    auc: float | None
    accuracy: float | None
    train_seconds: float
    protect_seconds: float
    bytes_up: int
    bytes_down: int


@dataclass(frozen=True)
class InversionFinding:
    """A gradient-inversion attack from one threat position, scored against the truth and the prior.

    ``status`` is "ok" (the attack ran), "no_access" (its position holds
    nothing it can invert, e.g. CKKS ciphertexts) or "skipped" (it could not
    run; ``reason`` says why). Metrics are None unless the status is "ok".
    ``prior_*`` are the same metrics for the attacker's prior image (the mean
    of public images); the gain over the prior is the leakage.
    ``per_image`` lists, for each attacked image, its psnr, ssim, prior_psnr
    and prior_ssim. ``figure`` is the image grid (true / reconstructed /
    prior), relative to the report.
    """

    method: str
    position: str
    status: str
    reason: str | None = None
    site: str | None = None
    images: int = 0
    batch_size: int = 0
    psnr_median: float | None = None
    psnr_worst_case: float | None = None
    ssim_median: float | None = None
    label_accuracy: float | None = None
    prior_psnr_median: float | None = None
    prior_ssim_median: float | None = None
    psnr_gain_median: float | None = None
    relative_leakage: float | None = None
    per_image: list[dict[str, float]] = field(default_factory=list)
    seconds: float | None = None
    figure: str | None = None
    assumptions: list[str] = field(default_factory=list)
    attack: str = "inversion"


@dataclass(frozen=True)
class MembershipFinding:
    """A membership-inference attack from one threat position, scored against the truth.

    ``tpr_at_fpr`` maps a false-positive rate ("0.01", "0.001", "0.0001")
    to ``{tpr, low, high, achieved_fpr, fpr_high, resolved}``: the TPR with
    its Clopper-Pearson interval at ``confidence``, the FPR reached and its
    interval's upper end; ``resolved`` is false where there are fewer than
    1/FPR non-members (the TPR is then at zero false positives). ``roc`` holds
    ``fpr`` and ``tpr`` lists for a log-log plot. Membership of the real
    training data was never randomised, so these scores bound no epsilon: the
    leakage is the attack's ``advantage`` (TPR - FPR at the best threshold) and
    its rates; epsilon lower bounds come from the canary audit. ``most_exposed``
    lists the members with the highest scores, by site and index in the site's
    training data. ``shadow_models`` counts the reference models used;
    ``shadow_models_failed`` those whose training diverged and were left out.
    """

    method: str
    position: str
    status: str
    reason: str | None = None
    shadow_models: int = 0
    shadow_models_failed: int = 0
    members: int = 0
    non_members: int = 0
    auc: float | None = None
    tpr_at_fpr: dict[str, dict[str, float]] = field(default_factory=dict)
    advantage: float | None = None
    confidence: float | None = None
    roc: dict[str, list[float]] = field(default_factory=dict)
    most_exposed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float | None = None
    attack: str = "membership"


@dataclass(frozen=True)
class CanaryAuditFinding(OneRunAudit):
    """A one-run canary audit (Steinke, Nasr and Jagielski 2023) of one scenario's training pipeline."""

    canary: str = "a held-out image with its label flipped, inserted into its site's training data"


@dataclass(frozen=True)
class Verdict:
    """The compliance verdict against the spec's thresholds.

    ``passed`` is None when the spec sets no thresholds (nothing was checked).
    """

    passed: bool | None
    reasons: list[str]


@dataclass(frozen=True)
class ScenarioFinding:
    """Everything measured for one scenario.

    ``server_view`` is what the aggregator received: "plaintext" (it can read
    every update) or "ciphertext" (it cannot), read off the recorded messages.
    ``attack_seconds`` is the time the attacks took (reference models included);
    ``parameters`` the length of one site's model update. ``engine`` is what ran
    the federation ("in-process" or "flower"); ``events`` says what happened
    beyond the plan (a site that dropped out, an evaluation on fewer sites).
    """

    name: str
    protocol: str
    dp: dict[str, Any] | None
    strategy: str
    utility: UtilityFinding
    privacy: PrivacyFinding
    cost: CostFinding
    protocol_parameters: dict[str, Any]
    server_view: str
    attacks: list[InversionFinding | MembershipFinding]
    rounds: list[RoundFinding]
    verdict: Verdict
    attack_seconds: float = 0.0
    parameters: int = 0
    engine: str = "in-process"
    events: list[str] = dataclasses.field(default_factory=list)


def to_json(value: Any) -> Any:
    """JSON-ready form of findings (dataclasses -> dicts; ``Verdict.passed`` -> ``pass``)."""
    if isinstance(value, Verdict):
        return {"pass": value.passed, "reasons": list(value.reasons)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # an undefined metric (e.g. accuracy on no samples) is null, never NaN
    return value
