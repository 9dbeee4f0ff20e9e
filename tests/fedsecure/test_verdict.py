"""The compliance verdict on hand-made findings: every PASS is earned, every FAIL says why."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fedsecure.config.spec import ThresholdsSpec
from fedsecure.report import Report
from fedsecure.report.findings import MembershipFinding, PartyGuaranteeFinding, PrivacyFinding, RateAtFpr
from fedsecure.report.verdict import judge


def party(epsilon: float) -> PartyGuaranteeFinding:
    return PartyGuaranteeFinding(epsilon=epsilon, noise_multiplier=1.0, sample_rate=1.0, steps=10, accounting="rdp",
                                 sees="the released model only")


PRIVATE = PrivacyFinding(
    guarantee="client-level DP", unit="site", epsilon=6.0, delta=1e-5, worst_party="site", secure_rng=True,
    simulation=False, protected_units=4,
    epsilon_by_adversary={"public": party(5.0), "server": party(5.0), "site": party(6.0)},
)


def membership(tpr: float, low: float, high: float) -> MembershipFinding:
    rate = RateAtFpr(tpr=tpr, low=low, high=high, achieved_fpr=0.0, fpr_high=0.001, resolved=True)
    return MembershipFinding(method="lira", position="external", status="ok", members=5000, non_members=5000,
                             tpr_at_fpr={"0.001": rate})


def test_membership_is_judged_by_the_upper_end_of_its_interval():
    thresholds = ThresholdsSpec(max_membership_tpr_at_0_1_fpr=0.01)
    # The point estimate is within the limit, the interval is not: the data cannot show the limit holds.
    verdict = judge(thresholds, PRIVATE, [membership(0.008, 0.004, 0.014)])
    assert verdict.passed is False and "upper end exceeds" in verdict.reasons[0]
    assert judge(thresholds, PRIVATE, [membership(0.004, 0.001, 0.009)]).passed is True


def test_seeded_noise_is_a_simulation_and_never_passes():
    seeded = dataclasses.replace(PRIVATE, secure_rng=False, simulation=True)
    for thresholds in (ThresholdsSpec(max_epsilon=10.0), None):
        verdict = judge(thresholds, seeded, [])
        assert verdict.passed is False and verdict.reasons[0].startswith("simulation, not a guarantee")
    assert judge(ThresholdsSpec(max_epsilon=10.0), PRIVATE, []).passed is True


def test_epsilon_is_judged_against_the_worst_party():
    verdict = judge(ThresholdsSpec(max_epsilon=5.0), PRIVATE, [])
    assert verdict.passed is False and "epsilon 6 against the site exceeds max_epsilon 5" in verdict.reasons[0]
    central = dataclasses.replace(PRIVATE, epsilon=None, worst_party="server")
    verdict = judge(ThresholdsSpec(max_epsilon=10.0), central, [])
    assert verdict.passed is False and "no differential privacy against the server" in verdict.reasons[0]


def test_delta_is_judged_against_one_over_the_protected_units_by_default():
    weak = dataclasses.replace(PRIVATE, delta=0.3)  # 4 sites: 1/4 = 0.25
    verdict = judge(ThresholdsSpec(max_epsilon=10.0), weak, [])
    assert verdict.passed is False and "delta 0.3 is not below 1/4" in " ".join(verdict.reasons)
    assert judge(ThresholdsSpec(max_epsilon=10.0), PRIVATE, []).passed is True
    verdict = judge(ThresholdsSpec(max_epsilon=10.0, max_delta=1e-6), PRIVATE, [])
    assert verdict.passed is False and "delta 1e-05 is not below max_delta 1e-06" in " ".join(verdict.reasons)


def test_a_canary_bound_above_what_the_guarantee_allows_fails():
    # Sample-level DP bounds one inserted image at the public's epsilon (5 here).
    sample = dataclasses.replace(PRIVATE, guarantee="sample-level DP", empirical_epsilon_lb=5.5,
                                 empirical_epsilon_ceiling=9.0)
    verdict = judge(ThresholdsSpec(max_epsilon=10.0), sample, [])
    assert verdict.passed is False and "exceeds the accountant's epsilon against the public (5)" in verdict.reasons[0]
    # Client-level DP bounds one image only as a change of a site's data: twice the public's epsilon.
    client = dataclasses.replace(PRIVATE, empirical_epsilon_lb=5.5, empirical_epsilon_ceiling=12.0)
    assert judge(ThresholdsSpec(max_epsilon=10.0), client, []).passed is True
    broken = dataclasses.replace(client, empirical_epsilon_lb=10.5)
    verdict = judge(ThresholdsSpec(max_epsilon=10.0), broken, [])
    assert verdict.passed is False and "exceeds twice the accountant's epsilon against the public" in verdict.reasons[0]


def test_the_verdicts_of_a_finished_report_are_judged_again_the_same():
    # The committed tiny report (tests/fixtures/report-tiny.json): its findings, read back, give its verdicts.
    report = Report.from_json(json.loads((Path(__file__).parent.parent / "fixtures" / "report-tiny.json").read_text()))
    thresholds = ThresholdsSpec(**{k: v for k, v in report.spec["thresholds"].items() if v is not None})
    for scenario in report.scenarios:
        assert judge(thresholds, scenario.privacy, scenario.attacks) == scenario.verdict, scenario.name
    # Nothing measured: a threshold on an attack that did not run fails, named by its kind of attack.
    plain = report.scenarios[0]
    verdict = judge(ThresholdsSpec(max_membership_tpr_at_0_1_fpr=0.1, max_reconstruction_psnr=30.0), plain.privacy, [])
    assert verdict.passed is False and verdict.reasons == [
        "membership leakage was not measured, so max_membership_tpr_at_0_1_fpr cannot be shown to hold",
        "inversion leakage was not measured, so max_reconstruction_psnr cannot be shown to hold",
    ]


def test_failed_repeats_exactly_the_checks_that_did_not_hold():
    thresholds = ThresholdsSpec(max_epsilon=5.0, max_membership_tpr_at_0_1_fpr=0.01)
    verdict = judge(thresholds, PRIVATE, [membership(0.004, 0.001, 0.009)])
    assert verdict.passed is False and len(verdict.reasons) == 3  # epsilon, delta, membership
    assert verdict.failed == ["epsilon 6 against the site exceeds max_epsilon 5"]
    passing = judge(ThresholdsSpec(max_epsilon=10.0), PRIVATE, [])
    assert passing.passed is True and passing.failed == [] and passing.reasons


def test_a_metric_that_is_not_a_number_fails_rather_than_passes():
    # NaN compares false with every bound, so a check written as "exceeds?" would let it through.
    nan = float("nan")
    verdict = judge(ThresholdsSpec(max_membership_tpr_at_0_1_fpr=0.01), PRIVATE, [membership(nan, nan, nan)])
    assert verdict.passed is False and "not a number" in verdict.failed[0]


def test_thresholds_that_do_not_apply_judge_nothing_rather_than_pass():
    # Found in review: only max_delta set, a scenario without DP: no check is made, so no PASS either.
    verdict = judge(ThresholdsSpec(max_delta=1e-5), PrivacyFinding(), [])
    assert verdict.passed is None and "nothing was checked" in verdict.reasons[0]
