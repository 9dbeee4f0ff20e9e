"""A scenario's privacy: the formal guarantee against each party, and the empirical evidence beside it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks.auditing import OneRunAudit
from fedsecure.report.formatting import number
from fedsecure.report.mechanism_finding import MechanismAuditFinding

# Who each party of ``epsilon_by_adversary`` is, in the words of the report.
PARTY_NAMES = {"public": "anyone given the released model", "server": "the aggregation server",
               "site": "another participating site"}


@dataclass(frozen=True)
class PartyGuaranteeFinding:
    """The guarantee against one party (the report's record of the accountant's ``PartyGuarantee``).

    ``epsilon`` is None where the party sees the data before any noise;
    ``noise_multiplier`` is the noise it faces (after subtracting what it
    knows of the noise), ``sample_rate`` the amplification claimed (1.0: none),
    ``steps`` the compositions counted, ``accounting`` how ("rdp", "prv",
    "rdp-gated"); ``sees`` and ``assumptions`` say in words what it sees and
    what the bound rests on.
    """

    epsilon: float | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    accounting: str
    sees: str
    assumptions: list[str] = field(default_factory=list)

    def statement(self, party: str) -> str:
        """The compliance line: against ``party``, what it sees, its epsilon and what that assumes."""
        value = "no differential privacy" if self.epsilon is None else f"epsilon {number(self.epsilon, 2)}"
        amplification = f", amplified by sampling rate {number(self.sample_rate, 3)}" if self.sample_rate < 1 else ""
        facing = "" if self.noise_multiplier is None else (
            f" (noise multiplier {number(self.noise_multiplier, 3)} over {self.steps} compositions"
            f"{amplification}, {self.accounting})"
        )
        return (
            f"Against {PARTY_NAMES.get(party, party)}, who sees {self.sees}: {value}{facing}; assuming "
            + "; ".join(self.assumptions) + "."
        )


@dataclass(frozen=True)
class CanaryAuditFinding(OneRunAudit):
    """A one-run canary audit (Steinke, Nasr and Jagielski 2023) of one scenario's training pipeline."""

    canary: str = "a held-out image with its label flipped, inserted into its site's training data"

    def summary(self) -> str:
        """The audit's counts and bound, as the canary list under the attack tables gives them."""
        return (
            f"{self.correct} of {self.guesses} guesses right on {self.canaries} canaries "
            f"({self.included} inserted): epsilon >= {number(self.epsilon_lb, 2)} at {number(self.confidence, 2)} "
            f"confidence (delta {self.delta:g}); the most these counts could show is {number(self.epsilon_ceiling, 2)}"
        )

    def leakage_statement(self) -> str:
        """The compliance section's line on what the audit found and could have found."""
        found = (
            f"so epsilon is at least {number(self.epsilon_lb, 2)}" if self.epsilon_lb > 0
            else "which does not show any epsilon above 0"
        )
        return (
            f"One-run canary audit: {self.correct} of {self.guesses} guesses right on {self.canaries} "
            f"mislabelled canaries, {found} (at {number(self.confidence, 2)} confidence); with every guess "
            f"right it could have shown at most {number(self.epsilon_ceiling, 2)}."
        )


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
    a reviewer needs to recompute it (its keys depend on the DP level, so it
    stays free-form). ``simulation`` is true when the noise derives from the
    spec's seed: no epsilon is then a guarantee. ``protected_units`` counts the
    units (images or sites) the guarantee covers.

    ``empirical_epsilon_lb`` is the one pre-registered lower bound (the canary
    audit's, at ``empirical_confidence``); ``empirical_epsilon_ceiling`` the
    largest value that audit could have shown with its canaries and guesses
    (0 where attacks ran but no randomised canaries did: membership of real
    training data is not randomised, so it bounds no epsilon).
    ``mechanism_audit`` says whether the privacy code does what the accountant
    assumes (schema 1.5).
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
    epsilon_by_adversary: dict[str, PartyGuaranteeFinding] | None = None
    worst_party: str | None = None
    mechanism: dict[str, Any] | None = None
    simulation: bool = False
    protected_units: int | None = None
    empirical_epsilon_ceiling: float | None = None
    empirical_confidence: float | None = None
    mechanism_audit: MechanismAuditFinding | None = None

    @property
    def differentially_private(self) -> bool:
        """Whether the scenario applies differential privacy at all."""
        return self.guarantee != "none"

    def epsilon_text(self) -> str:
        """The headline epsilon and the party it is against; "none (no DP)", "unbounded", and "simulation" where so."""
        if not self.differentially_private:
            return "none (no DP)"
        party = self.worst_party
        against = f" vs {party}" if party and "alike" not in party else ""
        text = f"unbounded{against}" if self.epsilon is None else f"{number(self.epsilon, 2)}{against}"
        return f"{text} (simulation: seeded noise)" if self.simulation else text

    def epsilon_against(self, party: str) -> str:
        """The formal epsilon against one party ("public", "server", "site"), as text."""
        if not self.differentially_private:
            return "none (no DP)"
        guarantee = (self.epsilon_by_adversary or {}).get(party)
        if guarantee is not None and guarantee.epsilon is None:
            return "none: it sees the data before any noise"
        # Without a guarantee per party, the one guarantee holds against every party alike (sample-level DP).
        epsilon = guarantee.epsilon if guarantee is not None else self.epsilon
        text = "unbounded" if epsilon is None else number(epsilon, 2)
        return f"{text} (simulation: seeded noise)" if self.simulation else text

    def empirical_text(self) -> str:
        """The empirical lower bound with the ceiling of the audit that produced it."""
        if self.empirical_epsilon_ceiling is None:
            return "not measured"
        if self.empirical_epsilon_lb is None:
            return "no canary audit (ceiling 0)"
        return f"{number(self.empirical_epsilon_lb, 2)} (ceiling {number(self.empirical_epsilon_ceiling, 2)})"

    def undetectable_overspend(self) -> str | None:
        """Where the empirical audit could not have shown the accountant's epsilon, a sentence saying so."""
        ceiling = self.empirical_epsilon_ceiling
        if not self.differentially_private or ceiling is None:
            return None
        if self.epsilon is not None and ceiling >= self.epsilon:
            return None
        stated = "unbounded" if self.epsilon is None else number(self.epsilon, 2)
        how = "no randomised canaries were run" if self.canary_audit is None else (
            f"{self.canary_audit.canaries} canaries, {self.canary_audit.guesses} guesses")
        return (
            f"the empirical audit ({how}) could show at most epsilon {number(ceiling, 2)}, below the "
            f"accountant's {stated}: it could not have detected an overspent privacy budget."
        )
