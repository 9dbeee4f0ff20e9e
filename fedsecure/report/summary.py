"""The report's tables (summary, cost, attacks) as rows of text: the same columns in report.md and report.html."""

from __future__ import annotations

from fedsecure.report.attack_finding import AttackFinding, AttackTable
from fedsecure.report.attack_kinds import ATTACK_FINDINGS
from fedsecure.report.formatting import bytes_text, number
from fedsecure.report.report import Report
from fedsecure.report.scenario import ScenarioFinding

SUMMARY_COLUMNS = (
    "scenario", "protection", "AUC", "accuracy", "epsilon (worst party)", "empirical epsilon", "attack success",
    "train + protect s", "up / round", "verdict",
)


def summary_rows(report: Report) -> list[tuple[str, ...]]:
    """The summary table's rows, as text, in SUMMARY_COLUMNS order."""
    return [
        (
            s.name,
            s.protection_text(),
            number(s.utility.auc),
            number(s.utility.accuracy),
            s.privacy.epsilon_text(),
            s.privacy.empirical_text(),
            s.attack_success_text(),
            number(s.cost.train_seconds + s.cost.protect_seconds, 1),
            bytes_text(s.cost.bytes_up_per_round),
            s.verdict.text,
        )
        for s in report.scenarios
    ]


COST_COLUMNS = (
    "scenario", "train s", "encrypt s", "aggregate s", "decrypt s", "attacks s", "up / round", "down / round",
    "bytes / parameter", "key setup",
)


def cost_rows(report: Report) -> list[tuple[str, ...]]:
    """The cost table's rows, as text, in COST_COLUMNS order."""
    return [
        (
            s.name,
            number(s.cost.train_seconds, 1),
            number(s.cost.encrypt_seconds, 2),
            number(s.cost.aggregate_seconds, 2),
            number(s.cost.decrypt_seconds, 2),
            number(s.attack_seconds, 1),
            bytes_text(s.cost.bytes_up_per_round),
            bytes_text(s.cost.bytes_down_per_round),
            number(s.cost.bytes_per_parameter, 1),
            bytes_text(s.cost.setup_bytes),
        )
        for s in report.scenarios
    ]


def attack_tables(report: Report) -> list[AttackTable]:
    """One table per kind of attack the report holds, each built by that kind's findings."""
    tables = []
    for kind in ATTACK_FINDINGS.values():
        rows: list[tuple[ScenarioFinding, AttackFinding]] = [
            (s, a) for s in report.scenarios for a in s.attacks if type(a) is kind
        ]
        if rows:
            tables.append(kind.table(rows))
    return tables
