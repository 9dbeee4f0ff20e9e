"""The kinds of attack finding, by the name report.json gives them under ``"attack"``.

The one place an attack's name meets its class: reading a report picks the
class from here, and the renderers ask the findings, never the names.
Order matters: it is the order of the attack tables and of the limits.
"""

from __future__ import annotations

from fedsecure.report.attack_finding import AttackFinding
from fedsecure.report.inversion_finding import InversionFinding
from fedsecure.report.membership_finding import MembershipFinding

ATTACK_FINDINGS: dict[str, type[AttackFinding]] = {
    "inversion": InversionFinding,
    "membership": MembershipFinding,
}
