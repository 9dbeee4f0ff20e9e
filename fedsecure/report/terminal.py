"""The summary an audit prints when it ends: one table, the reasons for each FAIL, where the report is.

The table is the report's answer in one screen: per scenario its protection,
its utility, its epsilon against the worst party, the worst leakage measured
from each seat that was attacked, and the verdict. A reader who wants more
opens report.html, whose path is printed as a ``file://`` link.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from fedsecure.report.attack_finding import AttackFinding
from fedsecure.report.formatting import number
from fedsecure.report.report import Report
from fedsecure.report.scenario import ScenarioFinding

VERDICT_STYLES = {True: "bold green", False: "bold red", None: "yellow"}


def seats(report: Report) -> list[str]:
    """The threat positions some attack ran from, in the order the report first names them."""
    found: list[str] = []
    for scenario in report.scenarios:
        for attack in scenario.attacks:
            if attack.position not in found:
                found.append(attack.position)
    return found


def worst_leakage(attacks: Sequence[AttackFinding]) -> str:
    """The most successful attack of each kind among ``attacks`` (one seat's), as headlines.

    Attacks of one kind are ranked by their frontier figure (inversion: PSNR
    gain over the prior; membership: TPR at 1% FPR); kinds are not compared
    with each other, so each kind keeps its own worst. An attack that did not
    run says so ("no access", "skipped").
    """
    by_kind: dict[type[AttackFinding], list[AttackFinding]] = {}
    for attack in attacks:
        by_kind.setdefault(type(attack), []).append(attack)
    headlines = []
    for found in by_kind.values():
        ran = [a for a in found if a.status == "ok" and a.frontier_value() is not None]
        worst = max(ran, key=_leakage) if ran else found[0]
        headlines.append(worst.headline())
    return "; ".join(headlines)


def _leakage(attack: AttackFinding) -> float:
    # A figure that is not a number ranks worst: the verdict fails it, so the table must show it.
    value = attack.frontier_value()
    return math.inf if value is None or math.isnan(value) else value


def summary_table(report: Report) -> Table:
    """The audit's table: one row per scenario."""
    positions = seats(report)
    table = Table(title=f"fedsecure audit: {report.spec.get('name', '')}", title_justify="left", show_lines=False)
    table.add_column("scenario", style="bold", no_wrap=True)
    table.add_column("protection")
    table.add_column(report.metric_label, justify="right")
    table.add_column("epsilon (worst party)", justify="right")
    for position in positions:
        table.add_column(f"worst leakage: {position} seat")
    table.add_column("verdict", no_wrap=True)
    for scenario in report.scenarios:
        leakage = [
            worst_leakage([a for a in scenario.attacks if a.position == position]) or "not attacked"
            for position in positions
        ]
        table.add_row(
            scenario.name, scenario.protection_text(), number(report.headline(scenario.utility)),
            scenario.privacy.epsilon_text(),
            *leakage, Text(scenario.verdict.text, style=VERDICT_STYLES[scenario.verdict.passed]),
        )
    return table


def failure_lines(scenarios: Sequence[ScenarioFinding]) -> list[str]:
    """One line per check a scenario failed (the checks that held are in the report), and why one was not judged.

    Reports before schema 1.4 keep no ``failed`` list: all their reasons are given for a FAIL.
    """
    lines: list[str] = []
    for scenario in scenarios:
        verdict = scenario.verdict
        if verdict.passed is False:
            lines.extend(f"{scenario.name} FAIL: {reason}" for reason in verdict.failed or verdict.reasons)
        elif verdict.passed is None:
            lines.extend(f"{scenario.name} not judged: {reason}" for reason in verdict.reasons)
    return lines


def summary(report: Report, report_html: Path) -> RenderableType:
    """The whole end-of-audit summary: the table, the FAIL reasons, the link to report.html."""
    parts: list[RenderableType] = [summary_table(report)]
    parts.extend(Text(line, style="red") for line in failure_lines(report.scenarios))
    link = report_html.resolve().as_uri()
    parts.append(Text.assemble("report: ", Text(link, style=f"link {link}")))
    return Group(*parts)


def render_summary(report: Report, report_html: Path, width: int = 160) -> str:
    """The summary as plain text (what a log file or a test sees)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    console.print(summary(report, report_html))
    output = console.file
    assert isinstance(output, io.StringIO)
    return output.getvalue()
