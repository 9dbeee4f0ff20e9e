"""The compliance verdict: a scenario's measurements against the spec's thresholds.

A threshold on something that was not measured fails: the absence of evidence
is not evidence of safety.
"""

from __future__ import annotations

from fedsecure.report.findings import InversionFinding, MembershipFinding, PrivacyFinding, Verdict
from fedsecure.config.spec import ThresholdsSpec


def judge(
    thresholds: ThresholdsSpec | None, privacy: PrivacyFinding, attacks: list[InversionFinding | MembershipFinding]
) -> Verdict:
    """The verdict for one scenario.

    Args:
        thresholds: the spec's ``[thresholds]``.
        privacy: the scenario's formal guarantee.
        attacks: the attacks run against the scenario. An attack with status
            "no_access" counts as measured: its position holds nothing to
            attack (e.g. ciphertexts), so that position leaks nothing to it.
    """
    blockers = [reason for reason in (_simulation(privacy), _contradiction(privacy)) if reason]
    if thresholds is None or not thresholds.model_fields_set:
        if blockers:
            return Verdict(passed=False, reasons=blockers)
        return Verdict(passed=None, reasons=["no [thresholds] in the spec: nothing was checked"])
    reasons: list[str] = list(blockers)
    ok = not blockers
    if thresholds.max_epsilon is not None:
        against = f" against the {privacy.worst_party}" if privacy.worst_party else ""
        if privacy.guarantee == "none":
            ok = False
            reasons.append(
                f"no differential-privacy guarantee (epsilon unbounded); the spec requires epsilon <= {thresholds.max_epsilon:g}"
            )
        elif privacy.epsilon is None:
            ok = False
            reasons.append(
                f"no differential privacy{against}: it sees the data before any noise (e.g. central noise, which "
                f"the server adds itself); the spec requires epsilon <= {thresholds.max_epsilon:g} against every party"
            )
        elif privacy.epsilon > thresholds.max_epsilon:
            ok = False
            reasons.append(f"epsilon {privacy.epsilon:.3g}{against} exceeds max_epsilon {thresholds.max_epsilon:g}")
        else:
            reasons.append(f"epsilon {privacy.epsilon:.3g}{against} <= max_epsilon {thresholds.max_epsilon:g}")
    delta_ok, delta_reason = _judge_delta(thresholds, privacy)
    ok = ok and delta_ok
    reasons.extend(delta_reason)
    measured = {a.attack for a in attacks if a.status in ("ok", "no_access")}
    for field_name, kind in (
        ("max_membership_tpr_at_0_1_fpr", "membership"),
        ("max_reconstruction_psnr", "inversion"),
        ("max_reconstruction_psnr_gain", "inversion"),
    ):
        if getattr(thresholds, field_name) is not None and kind not in measured:
            ok = False
            reasons.append(f"{kind} leakage was not measured, so {field_name} cannot be shown to hold")
    for attack in attacks:
        if attack.status not in ("ok", "no_access"):
            continue
        if isinstance(attack, InversionFinding):
            passed, why = _judge_inversion(thresholds, attack)
        else:
            passed, why = _judge_membership(thresholds, attack)
        ok = ok and passed
        reasons.extend(why)
    return Verdict(passed=ok, reasons=reasons)


def _simulation(privacy: PrivacyFinding) -> str | None:
    """Seeded DP noise is a simulation: whoever reads the seed in report.json can subtract the noise."""
    if privacy.guarantee == "none" or not privacy.simulation:
        return None
    return (
        "simulation, not a guarantee: the DP noise derives from the spec's seed, which report.json prints "
        "(secure_rng = false), so anyone who reads it can replay and subtract the noise; set secure_rng = true "
        "for evidence"
    )


def _judge_delta(thresholds: ThresholdsSpec, privacy: PrivacyFinding) -> tuple[bool, list[str]]:
    """delta against ``max_delta``, by default 1 / the number of protected units (images or sites)."""
    if privacy.guarantee == "none" or privacy.delta is None:
        return True, []
    if thresholds.max_delta is not None:
        limit, source = thresholds.max_delta, f"max_delta {thresholds.max_delta:g}"
    elif thresholds.max_epsilon is not None and privacy.protected_units:
        limit = 1 / privacy.protected_units
        source = f"1/{privacy.protected_units} (the protected units: max_delta's default)"
    else:
        return True, []
    if privacy.delta >= limit:
        return False, [
            f"delta {privacy.delta:.3g} is not below {source}: with probability delta the mechanism may expose "
            "a whole unit, so the guarantee is too weak"
        ]
    return True, [f"delta {privacy.delta:.3g} < {source}"]


def _contradiction(privacy: PrivacyFinding) -> str | None:
    """A canary bound above what the guarantee allows for canaries means a bug, in the DP code or in the audit.

    The canary audit inserts single images and attacks the released model (the public's view). Sample-level
    DP bounds that at the public's epsilon. Client-level DP bounds it only as a change of one site's data,
    two zero-out steps: twice the public's epsilon, at delta (1 + e^epsilon) delta, the delta the canary
    audit uses for client-level scenarios.
    """
    if privacy.epsilon_by_adversary is None or privacy.empirical_epsilon_lb is None:
        return None
    public = privacy.epsilon_by_adversary.get("public", {}).get("epsilon")
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


def _judge_membership(thresholds: ThresholdsSpec, attack: MembershipFinding) -> tuple[bool, list[str]]:
    """Membership leakage at FPR 0.1%, judged by its confidence interval's upper end (the cautious reading)."""
    limit = thresholds.max_membership_tpr_at_0_1_fpr
    if limit is None:
        return True, []
    where = f"{attack.method} membership inference from the {attack.position} position"
    if attack.status == "no_access":
        return True, [f"{where}: no access ({attack.reason})"]
    rate = attack.tpr_at_fpr.get("0.001")
    if rate is None or not rate["resolved"]:
        return False, [
            f"{where}: {attack.non_members} non-members cannot resolve a false-positive rate of 0.1%, so "
            "max_membership_tpr_at_0_1_fpr cannot be shown to hold"
        ]
    facts = f"TPR at 0.1% FPR {rate['tpr']:.3g} (interval {rate['low']:.3g}-{rate['high']:.3g})"
    if rate["high"] > limit:
        return False, [f"{where}: {facts}: its upper end exceeds max_membership_tpr_at_0_1_fpr {limit:g}"]
    return True, [f"{where}: {facts}: its upper end is within max_membership_tpr_at_0_1_fpr {limit:g}"]


def _judge_inversion(thresholds: ThresholdsSpec, attack: InversionFinding) -> tuple[bool, list[str]]:
    """Reconstruction leakage, judged by the gain over the attacker's prior image."""
    limits = [t for t in (thresholds.max_reconstruction_psnr, thresholds.max_reconstruction_psnr_gain) if t is not None]
    if not limits:
        return True, []
    where = f"{attack.method} from the {attack.position} position"
    if attack.status == "no_access":
        return True, [f"{where}: no access ({attack.reason})"]
    gain, psnr, prior = attack.psnr_gain_median, attack.psnr_median, attack.prior_psnr_median
    facts = f"median PSNR {psnr:.1f} dB against the prior image's {prior:.1f} dB (gain {gain:+.1f} dB)"
    ok, reasons = True, []
    if thresholds.max_reconstruction_psnr_gain is not None:
        limit = thresholds.max_reconstruction_psnr_gain
        if gain > limit:
            ok = False
            reasons.append(f"{where}: {facts} exceeds max_reconstruction_psnr_gain {limit:g} dB")
        else:
            reasons.append(f"{where}: {facts} is within max_reconstruction_psnr_gain {limit:g} dB")
    if thresholds.max_reconstruction_psnr is not None:
        limit = thresholds.max_reconstruction_psnr
        if psnr > limit and gain > 0:
            ok = False
            reasons.append(f"{where}: {facts} exceeds max_reconstruction_psnr {limit:g} dB and beats the prior")
        elif psnr > limit:
            reasons.append(
                f"{where}: {facts}; above max_reconstruction_psnr {limit:g} dB but no better than the prior, "
                "so nothing beyond the attacker's prior knowledge was recovered"
            )
        else:
            reasons.append(f"{where}: {facts} is within max_reconstruction_psnr {limit:g} dB")
    return ok, reasons
