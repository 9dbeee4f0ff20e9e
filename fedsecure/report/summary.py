"""The report's tables (summary, cost, attacks) as rows of text: the same columns in report.md and report.html."""

from __future__ import annotations

from fedsecure.positions import Position
from fedsecure.report.attack_finding import AttackFinding, AttackTable
from fedsecure.report.attack_kinds import ATTACK_FINDINGS
from fedsecure.report.formatting import bytes_text, number
from fedsecure.report.mechanism_finding import bound_text
from fedsecure.report.report import Report
from fedsecure.report.scenario import ScenarioFinding


def summary_columns(report: Report) -> tuple[str, ...]:
    """The summary table's columns: the headline metric is the task's (AUC, or Dice for segmentation)."""
    return (
        "scenario", "protection", report.metric_label, "accuracy", "epsilon (worst party)", "empirical epsilon",
        "attack success", "train + protect s", "up / round", "verdict",
    )


def summary_rows(report: Report) -> list[tuple[str, ...]]:
    """The summary table's rows, as text, in :func:`summary_columns` order."""
    return [
        (
            s.name,
            s.protection_text(),
            number(report.headline(s.utility)),
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


SEGMENTATION_COLUMNS = (
    "model", "Dice", "Dice per structure", "HD95 (voxels)", "missed structures", "spurious structures",
)


def segmentation_rows(report: Report) -> list[tuple[str, ...]]:
    """The segmentation table's rows (every scenario's released model, then the centralized baseline).

    Empty for a classification report. Dice per structure lists the foreground classes in order;
    HD95 averages the structures that truth and prediction both hold, the counts say how many
    (image, structure) pairs one of them lacks.
    """
    utilities = [(s.name, s.utility) for s in report.scenarios] + [("centralized", report.baselines.centralized)]
    return [
        (
            name, number(u.dice), " / ".join(number(d) for d in u.dice_per_class or []), number(u.hd95, 2),
            str(u.missed_structures), str(u.spurious_structures),
        )
        for name, u in utilities
        if u.dice_per_class is not None
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


SEAT_TITLE = "Leakage by seat"


def seat_table(report: Report) -> AttackTable | None:
    """For each scenario and each seat an attack ran from: the formal epsilon against it, the worst leakage found.

    One column per kind of attack in the report: the finding with the highest leakage (its frontier
    value) at that seat, "no access" where the seat holds nothing that attack can use, "not measured"
    where no such attack ran from it. None when no attack ran.
    """
    kinds = [kind for kind in ATTACK_FINDINGS.values() if any(type(a) is kind for s in report.scenarios
                                                               for a in s.attacks)]
    if not kinds:
        return None
    rows = []
    for s in report.scenarios:
        for position in Position:
            here = [a for a in s.attacks if a.position == position.value]
            if not here:
                continue
            rows.append((
                s.name, position.in_words, s.privacy.epsilon_against(position.party),
                *(_worst([a for a in here if type(a) is kind]) if position.value in kind.applies_at
                  else "does not apply" for kind in kinds),
            ))
    intro = (
        "The worst leakage each attack found from each seat, beside the formal epsilon the accountant states "
        "against that party (what each party's epsilon assumes is in the compliance section). A seat that holds "
        "nothing an attack can use (the server's inversion under secure aggregation) says no access; an attack "
        "that cannot run from a seat says does not apply."
    )
    return AttackTable(
        title=SEAT_TITLE, caption=f"{SEAT_TITLE}: {intro}", note=intro,
        columns=("scenario", "seat", "formal epsilon against it", *(kind.seat_measure for kind in kinds)),
        rows=rows, numbers_from=2,
    )


def _worst(found: list[AttackFinding]) -> str:
    ran = [a for a in found if a.status == "ok"]
    if ran:
        worst = max(ran, key=lambda a: (a.frontier_value() is not None, a.frontier_value() or 0.0))
        return f"{worst.success()} ({worst.method})"
    if any(a.status == "no_access" for a in found):
        return "no access"
    return "not run" if found else "not measured"


MECHANISM_TITLE = "Does the privacy code do what it claims?"


def mechanism_table(report: Report) -> AttackTable | None:
    """The mechanism audits, one row per DP scenario and canary (None when none ran)."""
    rows: list[tuple[str, ...]] = [
        (
            s.name, check.canary, check.observer, str(check.trials),
            number(check.per_round_claimed, 2),
            f">= {bound_text(check.per_round_lb)} ({bound_text(check.per_round_estimate)}, "
            f"test's interval to {bound_text(check.per_round_ub)})",
            number(check.whole_run_claimed, 2), f">= {bound_text(check.whole_run_lb)}",
            f"{bound_text(check.per_round_ceiling)} / {bound_text(check.whole_run_ceiling)}",
            number(check.tightness, 2),
            "consistent" if check.consistent else "inconsistent: a bug is likely",
        )
        for s in report.scenarios if s.privacy.mechanism_audit is not None
        for check in s.privacy.mechanism_audit.checks
    ]
    rows += [
        (
            s.name, f"{clients.clients} canary clients (Andrew et al. 2024)", "the released model only",
            str(clients.unseen), "", "", f"{number(clients.accountant_epsilon, 2)} (canary run)",
            f"about {number(clients.epsilon, 2)} ({number(clients.low, 2)} to {number(clients.high, 2)})", "", "",
            "estimate within" if clients.within else "estimate above: worth a look (not a bound)",
        )
        for s in report.scenarios if s.privacy.mechanism_audit is not None
        if (clients := s.privacy.mechanism_audit.canary_clients) is not None
    ]
    if not rows:
        return None
    intro = (
        "Each DP scenario's own privacy pipeline, run for one round many times without and with a canary, as the "
        "observer column says: the least epsilon the measured outputs prove, in the accountant's terms (the "
        "accountant's epsilon for the most noise the trials allow; lower bound at the audit's confidence, with the "
        "point estimate and the chosen test's interval in brackets), against the accountant's, per round and composed "
        "over the run as the accountant composes it; the ceiling is the most these trials could show; tightness is "
        "claimed over measured. A lower bound above the accountant's epsilon fails the scenario (it happens to a "
        "correct implementation with probability at most one minus the confidence, if its trade-off curve is in the "
        "accountant's family). Canary clients (where run) give an estimate from the released model alone, with a "
        "bootstrap interval, against the accountant's epsilon for the public in their own run; their trials column "
        "counts the unseen directions; they never fail a scenario."
    )
    return AttackTable(
        title=MECHANISM_TITLE, caption=f"{MECHANISM_TITLE} {intro}", note=intro,
        columns=("scenario", "canary", "observer", "trials each way", "per round: accountant", "per round: measured",
                 "whole run: accountant", "whole run: measured", "ceiling (round / run)", "tightness", "verdict"),
        rows=rows, numbers_from=3,
    )
