"""Everything measured for one scenario: utility, privacy, cost, attacks, verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedsecure.report.attack_finding import AttackFinding
from fedsecure.report.cost import CostFinding, RoundFinding
from fedsecure.report.json_form import from_json, to_json
from fedsecure.report.privacy_finding import PrivacyFinding
from fedsecure.report.utility import UtilityFinding
from fedsecure.report.verdict import Verdict


@dataclass(frozen=True)
class ScenarioFinding:
    """Everything measured for one scenario.

    ``dp`` is the scenario's ``dp`` section of the spec as it was run (free-form:
    its keys are the spec's). ``server_view`` is what the aggregator received:
    "plaintext" (it can read every update), "ciphertext" (CKKS: it cannot) or
    "masked" (SecAgg+: it cannot, but it learns the sum), read off the recorded
    messages. ``attack_seconds`` is the time the attacks took
    (reference models included); ``parameters`` the length of one site's model
    update. ``engine`` is what ran the federation ("in-process" or "flower");
    ``events`` says what happened beyond the plan (a site that dropped out, an
    evaluation on fewer sites). ``transport`` is, on Flower, how the sites
    reach the SuperLink as the operator declared it (schema 1.9; None in-process).
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
    attacks: list[AttackFinding]
    rounds: list[RoundFinding]
    verdict: Verdict
    attack_seconds: float = 0.0
    parameters: int = 0
    engine: str = "in-process"
    events: list[str] = field(default_factory=list)
    transport: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The scenario as report.json (and a run directory's stage file) holds it."""
        form: dict[str, Any] = to_json(self)
        return form

    @classmethod
    def from_json(cls, data: object, where: str = "scenario") -> ScenarioFinding:
        """A scenario read back from its JSON form.

        Raises:
            ReportFormatError: ``data`` is not a scenario's JSON form (the message names the field).
        """
        return from_json(cls, data, where)

    @property
    def encrypted(self) -> bool:
        """Whether the server received only ciphertexts."""
        return self.server_view == "ciphertext"

    @property
    def masked(self) -> bool:
        """Whether the server received only masked updates (SecAgg+), from which it learns their sum alone."""
        return self.server_view == "masked"

    @property
    def wall_seconds(self) -> float:
        """The scenario's compute time: its federation and its attacks."""
        return self.cost.wall_seconds + self.attack_seconds

    def protection_text(self) -> str:
        """The scenario's protocol and differential privacy, in a few words."""
        parts = [self.protocol]
        if self.dp is not None:
            placement = f", {self.dp['placement']}" if self.dp.get("placement") else ""
            parts.append(f"{self.dp['level']}-level DP (target epsilon {self.dp['epsilon']:g}{placement})")
        return " + ".join(parts)

    def attack_success_text(self) -> str:
        """Each attack's headline, or "not measured"."""
        return "; ".join(attack.headline() for attack in self.attacks) or "not measured"
