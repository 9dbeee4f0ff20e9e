"""The compliance verdict: a scenario's measurements against the spec's thresholds.

A threshold on something that was not measured fails: the absence of evidence
is not evidence of safety.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fedsecure.report.attack_finding import AttackFinding, Check
from fedsecure.report.attack_kinds import ATTACK_FINDINGS
from fedsecure.report.formatting import verdict_text
from fedsecure.report.json_form import json_key
from fedsecure.report.privacy_finding import PrivacyFinding

if TYPE_CHECKING:  # the thresholds are read, never built, here: the report needs no spec machinery to load
    from fedsecure.config.spec import ThresholdsSpec


@dataclass(frozen=True)
class Verdict:
    """The compliance verdict against the spec's thresholds.

    ``passed`` is None when the spec sets no thresholds (nothing was checked).
    ``reasons`` says what was checked, in order, each check that held and each
    that did not; ``failed`` repeats the ones that did not (what a reader of a
    FAIL needs first). Reports before schema 1.4 lack ``failed``.
    """

    passed: bool | None = field(metadata=json_key("pass"))  # "pass" is a Python keyword
    reasons: list[str]
    failed: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """PASS, FAIL, or "not judged"."""
        return verdict_text(self.passed)


def judge(thresholds: ThresholdsSpec | None, privacy: PrivacyFinding, attacks: Sequence[AttackFinding]) -> Verdict:
    """The verdict for one scenario.

    Args:
        thresholds: the spec's ``[thresholds]``.
        privacy: the scenario's formal guarantee.
        attacks: the attacks run against the scenario. An attack with status
            "no_access" counts as measured: its position holds nothing to
            attack (e.g. ciphertexts), so that position leaks nothing to it.
    """
    blockers = [reason for reason in (_simulation(privacy), _contradiction(privacy), _mechanism(privacy)) if reason]
    if thresholds is None or not thresholds.model_fields_set:
        if blockers:
            return Verdict(passed=False, reasons=blockers, failed=list(blockers))
        return Verdict(passed=None, reasons=["no [thresholds] in the spec: nothing was checked"])
    checks = [Check(False, reason) for reason in blockers]
    if thresholds.max_epsilon is not None:
        checks.append(_judge_epsilon(thresholds.max_epsilon, privacy))
    checks.extend(_judge_delta(thresholds, privacy))
    measured = {a.kind() for a in attacks if a.measured}
    # In the spec's order of thresholds, each with the kind of attack that answers for it.
    answered_by = {name: kind for kind, finding in ATTACK_FINDINGS.items() for name in finding.thresholds}
    for field_name in type(thresholds).model_fields:
        kind = answered_by.get(field_name)
        if kind is not None and getattr(thresholds, field_name) is not None and kind not in measured:
            checks.append(Check(False, f"{kind} leakage was not measured, so {field_name} cannot be shown to hold"))
    for attack in attacks:
        if attack.measured:
            checks.extend(attack.judge(thresholds))
    if not checks:  # thresholds that do not apply here (e.g. max_delta without DP): a PASS would be vacuous
        return Verdict(passed=None, reasons=["no threshold of the spec applies to this scenario: nothing was checked"])
    return Verdict(
        passed=all(c.held for c in checks), reasons=[c.reason for c in checks],
        failed=[c.reason for c in checks if not c.held],
    )


def _judge_epsilon(limit: float, privacy: PrivacyFinding) -> Check:
    """The epsilon against the worst party, against ``max_epsilon``."""
    against = f" against the {privacy.worst_party}" if privacy.worst_party else ""
    if privacy.guarantee == "none":
        return Check(
            False, f"no differential-privacy guarantee (epsilon unbounded); the spec requires epsilon <= {limit:g}"
        )
    if privacy.epsilon is None:
        return Check(False, (
            f"no differential privacy{against}: it sees the data before any noise (e.g. central noise, which "
            f"the server adds itself); the spec requires epsilon <= {limit:g} against every party"
        ))
    if privacy.epsilon > limit:
        return Check(False, f"epsilon {privacy.epsilon:.3g}{against} exceeds max_epsilon {limit:g}")
    return Check(True, f"epsilon {privacy.epsilon:.3g}{against} <= max_epsilon {limit:g}")


def _simulation(privacy: PrivacyFinding) -> str | None:
    """Seeded DP noise is a simulation: whoever reads the seed in report.json can subtract the noise."""
    if privacy.guarantee == "none" or not privacy.simulation:
        return None
    return (
        "simulation, not a guarantee: the DP noise derives from the spec's seed, which report.json prints "
        "(secure_rng = false), so anyone who reads it can replay and subtract the noise; set secure_rng = true "
        "for evidence"
    )


def _judge_delta(thresholds: ThresholdsSpec, privacy: PrivacyFinding) -> list[Check]:
    """The delta against ``max_delta``, by default 1 / the number of protected units (images or sites)."""
    if privacy.guarantee == "none" or privacy.delta is None:
        return []
    if thresholds.max_delta is not None:
        limit, source = thresholds.max_delta, f"max_delta {thresholds.max_delta:g}"
    elif thresholds.max_epsilon is not None and privacy.protected_units:
        limit = 1 / privacy.protected_units
        source = f"1/{privacy.protected_units} (the protected units: max_delta's default)"
    else:
        return []
    if privacy.delta >= limit:
        return [Check(False, (
            f"delta {privacy.delta:.3g} is not below {source}: with probability delta the mechanism may expose "
            "a whole unit, so the guarantee is too weak"
        ))]
    return [Check(True, f"delta {privacy.delta:.3g} < {source}")]


def _mechanism(privacy: PrivacyFinding) -> str | None:
    """A mechanism audit that measured more leakage than the accountant allows: the DP code is broken."""
    return privacy.mechanism_audit.failure() if privacy.mechanism_audit is not None else None


def _contradiction(privacy: PrivacyFinding) -> str | None:
    """A canary bound above what the guarantee allows for canaries means a bug, in the DP code or in the audit.

    The canary audit inserts single images and attacks the released model (the public's view). Sample-level
    DP bounds that at the public's epsilon. Client-level DP bounds it only as a change of one site's data,
    two zero-out steps: twice the public's epsilon, at delta (1 + e^epsilon) delta, the delta the canary
    audit uses for client-level scenarios.
    """
    if privacy.epsilon_by_adversary is None or privacy.empirical_epsilon_lb is None:
        return None
    against_public = privacy.epsilon_by_adversary.get("public")
    public = against_public.epsilon if against_public is not None else None
    if public is None:
        return None
    allowed = 2 * public if privacy.guarantee == "client-level DP" else public
    if privacy.empirical_epsilon_lb <= allowed:
        return None
    what = "twice the accountant's epsilon against the public (one site's data changed)" if allowed != public else (
        "the accountant's epsilon against the public")
    return (
        f"the empirical lower bound on epsilon ({privacy.empirical_epsilon_lb:.3g}) exceeds {what} "
        f"({allowed:.3g}): the privacy guarantee cannot be relied on (a bug in the DP implementation or in the audit)"
    )
