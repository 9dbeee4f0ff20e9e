"""Every typed finding of an audit, by one import: what the audit builds and report.json holds.

Each finding lives in the module of its concept (utility, privacy, cost, one
module per kind of attack, the scenario, the whole report); the code that
builds findings imports them from here.
"""

from __future__ import annotations

from fedsecure.report.attack_finding import AttackFinding, AttackTable, RocCurve
from fedsecure.report.attack_kinds import ATTACK_FINDINGS
from fedsecure.report.cost import CostFinding, RoundFinding
from fedsecure.report.environment import Environment
from fedsecure.report.inversion_finding import ImageScores, InversionFinding
from fedsecure.report.json_form import from_json, to_json
from fedsecure.report.mechanism_finding import CanaryClientsFinding, MechanismAuditFinding, MechanismCheck
from fedsecure.report.membership_finding import ExposedMember, MembershipFinding, RateAtFpr
from fedsecure.report.privacy_finding import CanaryAuditFinding, PartyGuaranteeFinding, PrivacyFinding
from fedsecure.report.report import SCHEMA_VERSION, Report
from fedsecure.report.scenario import ScenarioFinding
from fedsecure.report.utility import (
    Baselines,
    CentralizedFinding,
    LocalOnlyFinding,
    SiteModelUtility,
    SiteUtility,
    UtilityFinding,
)
from fedsecure.report.verdict import Verdict

__all__ = [
    "ATTACK_FINDINGS", "SCHEMA_VERSION", "AttackFinding", "AttackTable", "Baselines", "CanaryAuditFinding",
    "CanaryClientsFinding",
    "CentralizedFinding", "CostFinding", "Environment", "ExposedMember", "ImageScores", "InversionFinding",
    "LocalOnlyFinding", "MechanismAuditFinding", "MechanismCheck",
    "MembershipFinding", "PartyGuaranteeFinding", "PrivacyFinding", "RateAtFpr", "Report",
    "RocCurve", "RoundFinding", "ScenarioFinding", "SiteModelUtility", "SiteUtility", "UtilityFinding", "Verdict",
    "from_json", "to_json",
]
