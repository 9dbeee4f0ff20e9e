"""The compliance verdict: a scenario's measurements against the spec's thresholds.

A threshold on something that was not measured fails: the absence of evidence
is not evidence of safety.
"""

from __future__ import annotations

from fedsecure.audit.findings import PrivacyFinding, Verdict
from fedsecure.audit.spec import ThresholdsSpec


def judge(thresholds: ThresholdsSpec | None, privacy: PrivacyFinding, measured_attacks: set[str]) -> Verdict:
    """The verdict for one scenario.

    Args:
        thresholds: the spec's ``[thresholds]``.
        privacy: the scenario's formal guarantee.
        measured_attacks: kinds of attack ("membership", "inversion") that ran with status ok.
    """
    if thresholds is None or not thresholds.model_fields_set:
        return Verdict(passed=None, reasons=["no [thresholds] in the spec: nothing was checked"])
    reasons: list[str] = []
    ok = True
    if thresholds.max_epsilon is not None:
        if privacy.epsilon is None:
            ok = False
            reasons.append(
                f"no differential-privacy guarantee (epsilon unbounded); the spec requires epsilon <= {thresholds.max_epsilon:g}"
            )
        elif privacy.epsilon > thresholds.max_epsilon:
            ok = False
            reasons.append(f"epsilon {privacy.epsilon:.3g} exceeds max_epsilon {thresholds.max_epsilon:g}")
        else:
            reasons.append(f"epsilon {privacy.epsilon:.3g} <= max_epsilon {thresholds.max_epsilon:g}")
    for field_name, kind in (
        ("max_membership_tpr_at_0_1_fpr", "membership"),
        ("max_reconstruction_psnr", "inversion"),
    ):
        if getattr(thresholds, field_name) is not None and kind not in measured_attacks:
            ok = False
            reasons.append(f"{kind} leakage was not measured, so {field_name} cannot be shown to hold")
    return Verdict(passed=ok, reasons=reasons)
