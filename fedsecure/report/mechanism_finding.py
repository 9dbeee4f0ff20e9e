"""Does the privacy code do what it claims? The mechanism audit's record.

The audit ran one site's real privacy pipeline many times without and with a
canary (``fedsecure.audit.mechanism``) and bounded, from how well the two
could be told apart, the most noise the pipeline can be adding; the accountant
turns that into an epsilon as it does the claimed noise. For a correct
implementation a lower bound above the accountant's epsilon happens with
probability at most one minus the confidence (if the pipeline's trade-off
curve is in the accountant's family): the verdict is then "inconsistent", the
scenario fails and a bug is likely. Canary clients give an estimate, not a
bound: they never fail a scenario, and an estimate above the accountant's
epsilon is reported as a warning.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedsecure.report.formatting import number


def bound_text(value: float) -> str:
    """An epsilon figure of the mechanism audit: "unbounded" where it is not finite (NaN once read back)."""
    return number(value, 2) if math.isfinite(value) else "unbounded"


@dataclass(frozen=True)
class MechanismCheck:
    """One canary's audit: the measured trade-off, and what it means per round and for the whole run.

    The epsilon figures are at the guarantee's delta, each from the
    accountant: ``claimed`` from the mechanism's own noise multiplier,
    ``lb`` from the largest noise multiplier the trials did not rule out (at
    ``confidence``; the lower bound, in the accountant's terms), ``estimate``
    from the point rates and ``ub`` from the chosen test's rates at their other
    confidence limits (that test's interval, not an upper bound on the
    mechanism's epsilon). ``ceiling`` is the largest lower bound these trials
    could show (every trial told apart); non-finite figures (JSON null, NaN
    when read back) mean unbounded. ``statistic`` and ``threshold`` are the test chosen on
    half the trials; the counts are from the other half.
    """

    canary: str
    observer: str
    trials: int
    statistic: str
    false_positives: int
    negatives: int
    false_negatives: int
    positives: int
    confidence: float
    claimed_noise_multiplier: float
    noise_multiplier_bound: float
    sample_rate: float
    steps_per_round: int
    per_round_claimed: float
    per_round_lb: float
    per_round_estimate: float
    per_round_ub: float
    per_round_ceiling: float
    whole_run_claimed: float
    whole_run_lb: float
    whole_run_estimate: float
    whole_run_ceiling: float
    assumptions: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Whether the lower bounds stay within the accountant's epsilon (an unbounded one, NaN once read back, not)."""
        return self.per_round_lb <= self.per_round_claimed and self.whole_run_lb <= self.whole_run_claimed

    @property
    def tightness(self) -> float:
        """Claimed over measured per-round epsilon (1.0: the audit showed all the accountant claims)."""
        return self.per_round_claimed / self.per_round_lb if self.per_round_lb > 0 else float("inf")

    def summary(self) -> str:
        """One line: the bound against the claim, per round and for the run, with the ceiling."""
        return (
            f"{self.canary}, {self.trials} trials each way, observed as {self.observer}: per round epsilon >= "
            f"{bound_text(self.per_round_lb)} (estimate {bound_text(self.per_round_estimate)}, the test's interval "
            f"up to {bound_text(self.per_round_ub)}) against the accountant's {number(self.per_round_claimed, 2)}; "
            f"whole run >= {bound_text(self.whole_run_lb)} against {number(self.whole_run_claimed, 2)}; ceiling "
            f"{bound_text(self.per_round_ceiling)} per round, {bound_text(self.whole_run_ceiling)} whole run"
        )


@dataclass(frozen=True)
class CanaryClientsFinding:
    """Canary clients over a real run (Andrew et al. 2024): an estimate from the released model alone.

    ``clients`` canary clients took part in a second run of the scenario's
    federation, each sending a random direction of norm ``norm`` (in a
    ``dimension``-long model); the released model's change was scored against
    them and against ``unseen`` directions. ``epsilon`` is the estimate at
    ``delta`` (an estimate, not a bound: it fits Gaussians to the scores),
    ``low`` and ``high`` its bootstrap interval at ``confidence``;
    ``accountant_epsilon`` is the accountant's against the public, who sees
    the same model (None without DP).
    """

    clients: int
    unseen: int
    dimension: int
    norm: float
    rounds: int
    epsilon: float
    low: float
    high: float
    confidence: float
    delta: float
    accountant_epsilon: float | None
    inserted_mean: float
    inserted_std: float
    unseen_mean: float
    unseen_std: float
    wall_seconds: float

    @property
    def within(self) -> bool:
        """Whether the estimate stays within the accountant's epsilon (no DP: nothing to compare)."""
        return self.accountant_epsilon is None or self.epsilon <= self.accountant_epsilon

    def summary(self) -> str:
        """One line: the estimate and its interval against the accountant's."""
        against = "" if self.accountant_epsilon is None else (
            f" against the accountant's {number(self.accountant_epsilon, 2)} for the public (in the canary run, "
            f"calibrated for the sites and the {self.clients} canary clients)")
        return (
            f"{self.clients} canary clients over {self.rounds} rounds, scored on the released model: epsilon about "
            f"{number(self.epsilon, 2)} ({number(self.confidence, 2)} interval {number(self.low, 2)} to "
            f"{number(self.high, 2)}){against}"
        )


@dataclass(frozen=True)
class MechanismAuditFinding:
    """The mechanism audit of one DP scenario: one check per kind of canary.

    ``site`` is the site whose pipeline was run, ``level`` the DP level,
    ``wall_seconds`` what the audit took. ``confidence`` is the audit's joint
    confidence (each check is at a Bonferroni share of it).
    """

    level: str
    site: int
    confidence: float
    checks: list[MechanismCheck]
    wall_seconds: float
    canary_clients: CanaryClientsFinding | None = None

    @property
    def consistent(self) -> bool:
        """Whether every check stayed within the accountant's epsilon (canary clients estimate; they do not judge)."""
        return all(check.consistent for check in self.checks)

    @property
    def verdict(self) -> str:
        """"consistent", "inconsistent", or "not audited" (the mechanism offers no pipeline to run)."""
        if not self.checks:
            return "not audited"
        return "consistent" if self.consistent else "inconsistent"

    def statement(self) -> str:
        """The compliance section's line: what the audit ran, found and could have found."""
        checks = "; ".join(check.summary() for check in self.checks)
        clients = "" if self.canary_clients is None else f" Canary clients: {self.canary_clients.summary()}." + (
            "" if self.canary_clients.within else
            " The estimate is above the accountant's epsilon: not proof (it is an estimate), but worth a look.")
        if not self.checks:
            return f"Does the privacy code do what it claims? Not audited: the mechanism runs no pipeline.{clients}"
        if self.consistent:
            return (
                f"Does the privacy code do what it claims? Consistent: site {self.site}'s {self.level}-level pipeline "
                f"showed no more leakage than the accountant allows ({checks}; {self.confidence:g} confidence, if "
                f"the pipeline's trade-off curve is in the accountant's family).{clients}"
            )
        return f"Does the privacy code do what it claims? Inconsistent: {self.failure()} ({checks}).{clients}"

    def failure(self) -> str | None:
        """The verdict's reason when inconsistent (None when consistent)."""
        broken = [check for check in self.checks if not check.consistent]
        if not broken:
            return None
        check = broken[0]
        return (
            f"the privacy code does not do what the accountant assumes: with {check.canary}, the {self.level}-level "
            f"pipeline leaks per round epsilon >= {check.per_round_lb:.3g} (whole run >= {check.whole_run_lb:.3g}) "
            f"where the accountant claims {check.per_round_claimed:.3g} ({check.whole_run_claimed:.3g}), at "
            f"{self.confidence:g} confidence: a bug in the DP implementation is likely"
        )
