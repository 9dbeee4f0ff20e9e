"""A membership-inference finding, and how the report shows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from typing_extensions import Self, override

from fedsecure.positions import Position
from fedsecure.report.attack_finding import AttackFinding, AttackTable, Check, RocCurve
from fedsecure.report.formatting import number

if TYPE_CHECKING:
    from fedsecure.config.spec import ThresholdsSpec
    from fedsecure.report.scenario import ScenarioFinding


# fedsecure's default count of reference models. Carlini et al. 2022 (Fig. 9) show online LiRA's TPR at low FPR
# still rising with the number of reference models and falling off steeply below a few dozen: with fewer than this,
# the report says its rates understate a better-equipped attacker.
ENOUGH_REFERENCES = 16


@dataclass(frozen=True)
class RateAtFpr:
    """The TPR at one fixed false-positive rate, with its Clopper-Pearson interval.

    ``achieved_fpr`` is the FPR reached and ``fpr_high`` its interval's upper
    end; ``resolved`` is false where there are fewer than 1/FPR non-members
    (the TPR is then at zero false positives).
    """

    tpr: float
    low: float
    high: float
    achieved_fpr: float
    fpr_high: float
    resolved: bool

    def text(self) -> str:
        """The TPR with its interval, and where the FPR could not be resolved, what was given instead."""
        text = f"{self.tpr:.3f} [{self.low:.3f}, {self.high:.3f}]"
        return text if self.resolved else f"{text} (at 0 false positives: too few non-members)"


@dataclass(frozen=True)
class ExposedMember:
    """A training image the attack found most member-like: its site, its index there, its score."""

    site: str
    index: int
    score: float


@dataclass(frozen=True)
class MembershipFinding(AttackFinding):
    """A membership-inference attack from one threat position, scored against the truth.

    ``tpr_at_fpr`` maps a false-positive rate ("0.01", "0.001", "0.0001") to
    the TPR there, at ``confidence``. ``roc`` holds ``fpr`` and ``tpr`` lists
    for a log-log plot (empty where the attack did not run). Membership of the
    real training data was never randomised, so these scores bound no epsilon:
    the leakage is the attack's ``advantage`` (TPR - FPR at the best
    threshold) and its rates; epsilon lower bounds come from the canary audit.
    ``most_exposed`` lists the members with the highest scores.
    ``observed`` says what the attack scored with at its seat (the released
    model; each site's local model; a site's trajectory of global models).
    ``shadow_models`` counts the reference models used;
    ``shadow_models_failed`` those whose training diverged and were left out.
    """

    observed: str | None = None
    shadow_models: int = 0
    shadow_models_failed: int = 0
    members: int = 0
    non_members: int = 0
    auc: float | None = None
    tpr_at_fpr: dict[str, RateAtFpr] = field(default_factory=dict)
    advantage: float | None = None
    confidence: float | None = None
    roc: dict[str, list[float]] = field(default_factory=dict)
    most_exposed: list[ExposedMember] = field(default_factory=list)
    seconds: float | None = None

    thresholds: ClassVar[tuple[str, ...]] = ("max_membership_tpr_at_0_1_fpr",)
    frontier_rank: ClassVar[int] = 0  # the membership TPR, where measured, is the frontier's leakage axis
    seat_measure: ClassVar[str] = "membership: worst TPR at 1% FPR"

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "scenario", "attack", "position", "status", "AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "advantage",
        "epsilon (worst party)",
    )

    def rate_text(self, level: str) -> str:
        """The TPR at FPR ``level`` ("0.01") with its interval; "n/a" where it was not measured."""
        rate = self.tpr_at_fpr.get(level)
        return "n/a" if rate is None else rate.text()

    @override
    def success(self) -> str:
        rate = self.tpr_at_fpr.get("0.01")
        return f"TPR {number(rate.tpr if rate else None)} at 1% FPR"

    @override
    def leakage(self) -> str:
        rate = self.tpr_at_fpr.get("0.01")
        detail = "" if rate is None else (
            f", {100 * rate.tpr:.1f}% of members found at 1% false positives "
            f"(interval {100 * rate.low:.1f}-{100 * rate.high:.1f}%)"
        )
        observed = f" scoring with {self.observed}" if self.observed else ""
        return (
            f"Membership inference, {self.where}{observed}, on {self.members} members and {self.non_members} "
            f"non-members: AUC {number(self.auc)}{detail}; advantage {number(self.advantage)} "
            "(membership of real training data is not randomised, so this bounds no epsilon)."
        )

    @override
    def table_row(self, scenario: ScenarioFinding) -> tuple[str, ...]:
        return (
            scenario.name, self.method, self.position, self.status_text, number(self.auc),
            self.rate_text("0.01"), self.rate_text("0.001"), number(self.advantage), scenario.privacy.epsilon_text(),
        )

    @override
    @classmethod
    def table(cls, rows: Sequence[tuple[ScenarioFinding, Self]]) -> AttackTable:
        confidence = number(rows[0][1].confidence, 2)  # one confidence per audit: the spec's
        return AttackTable(
            title="Membership inference",
            caption="Membership inference from each seat: the released model (external), each site's local models "
                    "and the released model (server; under secure aggregation the released model only), a site's "
                    "trajectory of global models (client); TPR at a fixed FPR, with its "
                    f"{confidence} Clopper-Pearson interval:",
            note="From each seat: the released model (external), each site's local models and the released model "
                 "(server; under secure aggregation the released model only), a site's trajectory of global models, "
                 f"targeting the other sites' patients (client). TPR at a fixed FPR with its {confidence} "
                 "Clopper-Pearson interval.",
            columns=cls.COLUMNS,
            rows=[finding.table_row(scenario) for scenario, finding in rows],
            numbers_from=4,
        )

    @override
    @classmethod
    def limits(cls, found: Sequence[Self]) -> list[str]:
        if not any(finding.measured for finding in found):
            return ["Membership inference was not measured."]
        measured = {finding.position for finding in found if finding.measured}
        missing = [p for p in Position if p.value not in measured]
        lines = []
        if missing:
            lines.append(
                f"Membership was not measured from {', '.join(p.in_words for p in missing)}; "
                "what those seats see may reveal more."
            )
        # What each seat's attack left out, from what it says it scored with.
        observed = {finding.position: finding.observed or "" for finding in found if finding.status == "ok"}
        if "local model" in observed.get(Position.SERVER.value, ""):
            lines.append(
                "The server's seat used each site's local models of the first and last rounds (the rounds whose "
                "messages are kept) and the released model; it also sees the other rounds' messages and every "
                "global model, so it may learn more."
            )
        if "global models" in observed.get(Position.CLIENT.value, ""):
            lines.append(
                "The other hospital's seat used a few rounds' global models and the released model; a site that "
                "also subtracts its own update from each aggregate holds more (with two sites, the other site's "
                "local model each round, under secure aggregation too), which this audit did not measure."
            )
        used = [f.shadow_models for f in found if f.status == "ok" and f.shadow_models]
        if used and min(used) < ENOUGH_REFERENCES:
            lines.append(
                f"{min(used)} reference models, fewer than the default {ENOUGH_REFERENCES}: LiRA's rates at low "
                "false-positive rates keep rising with more reference models (Carlini et al. 2022), so a "
                "better-equipped attacker may find more than these rates show."
            )
        for finding in found:
            unresolved = [level for level, rate in finding.tpr_at_fpr.items() if not rate.resolved]
            if finding.status == "ok" and unresolved:
                lines.append(
                    f"{finding.non_members} non-members cannot resolve false-positive rates of "
                    f"{', '.join(f'{100 * float(level):g}%' for level in unresolved)}; the rate at zero false "
                    "positives is given instead."
                )
                break
        return lines

    @override
    def judge(self, thresholds: ThresholdsSpec) -> list[Check]:
        """Membership leakage at FPR 0.1%, judged by its confidence interval's upper end (the cautious reading)."""
        limit = thresholds.max_membership_tpr_at_0_1_fpr
        if limit is None:
            return []
        where = f"{self.method} membership inference from the {self.position} position"
        if self.status == "no_access":
            return [Check(True, f"{where}: no access ({self.reason})")]
        rate = self.tpr_at_fpr.get("0.001")
        if rate is None or not rate.resolved:
            return [Check(
                False,
                f"{where}: {self.non_members} non-members cannot resolve a false-positive rate of 0.1%, so "
                "max_membership_tpr_at_0_1_fpr cannot be shown to hold",
            )]
        if not math.isfinite(rate.high):  # NaN compares false: it would pass every bound
            return [Check(False, f"{where}: its TPR interval is not a number, so max_membership_tpr_at_0_1_fpr "
                                 "cannot be shown to hold")]
        facts = f"TPR at 0.1% FPR {rate.tpr:.3g} (interval {rate.low:.3g}-{rate.high:.3g})"
        if rate.high > limit:
            return [Check(False, f"{where}: {facts}: its upper end exceeds max_membership_tpr_at_0_1_fpr {limit:g}")]
        return [Check(True, f"{where}: {facts}: its upper end is within max_membership_tpr_at_0_1_fpr {limit:g}")]

    @override
    def frontier_axis(self) -> str:
        return f"membership TPR at 1% FPR ({self.method})"

    @override
    def frontier_value(self) -> float | None:
        rate = self.tpr_at_fpr.get("0.01")
        return rate.tpr if self.status == "ok" and rate is not None else None

    @override
    def roc_curve(self) -> RocCurve | None:
        if self.status != "ok" or not self.roc.get("fpr"):
            return None
        return RocCurve(fpr=self.roc["fpr"], tpr=self.roc["tpr"], auc=self.auc, negatives=self.non_members)
