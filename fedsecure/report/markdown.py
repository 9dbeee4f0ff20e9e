"""report.md: the summary table, verdicts and compliance section, rendered from report.json alone."""

from __future__ import annotations

from typing import Any

from fedsecure.report.compliance import audit_scope, ceiling_below_epsilon, scenario_compliance
from fedsecure.report.formatting import number, verdict_text
from fedsecure.report.summary import (
    COST_COLUMNS,
    INVERSION_COLUMNS,
    MEMBERSHIP_COLUMNS,
    SUMMARY_COLUMNS,
    cost_rows,
    inversion_rows,
    membership_confidence,
    membership_rows,
    summary_rows,
)


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown summary of a report (for a pull request or a ticket)."""
    spec, env, baselines = report["spec"], report["environment"], report["baselines"]
    lines = [
        f"# fedsecure audit: {spec['name']}",
        "",
        f"{len(report['scenarios'])} scenario(s); data `{spec['data']['source']}` over {spec['data']['sites']} sites "
        f"({spec['data']['partition']} partition); model `{spec['model']['name']}`; "
        f"{spec['federation']['strategy']}, {spec['federation']['rounds']} rounds; seed {env['seed']}; "
        f"device {env['device']}; fedsecure {env['fedsecure']}, torch {env['torch']}.",
        "",
        *(["> **Quick run**: reduced rounds, data and attacks; a first look, not evidence.", ""] if report.get("quick") else []),
        *_table(SUMMARY_COLUMNS, summary_rows(report)),
    ]
    central, local = baselines["centralized"], baselines["local_only"]
    lines += [
        "",
        "Baselines, same budget of passes over the data:",
        "",
        f"- centralized (all data pooled, the upper bound): AUC {number(central['auc'])}, accuracy {number(central['accuracy'])}",
        f"- local-only (each site alone, mean over sites on the whole test set): AUC {number(local['auc'])}, "
        f"accuracy {number(local['accuracy'])}",
    ]
    lines += ["", "Cost of training and protection (seconds summed over the run, bytes per round over all sites):", ""]
    lines += _table(COST_COLUMNS, cost_rows(report))
    inversions = inversion_rows(report)
    if inversions:
        lines += ["", "Gradient inversion, judged against the attacker's prior image (the mean public image):", ""]
        lines += _table(INVERSION_COLUMNS, inversions)
    confidence = membership_confidence(report)
    if confidence is not None:
        lines += [
            "",
            "Membership inference on the released model (TPR at a fixed FPR, with its "
            f"{number(confidence, 2)} Clopper-Pearson interval):",
            "",
        ]
        lines += _table(MEMBERSHIP_COLUMNS, membership_rows(report))
    canaries = [(s["name"], s["privacy"]["canary_audit"]) for s in report["scenarios"] if s["privacy"].get("canary_audit")]
    if canaries:
        lines += ["", "One-run canary audits (Steinke, Nasr and Jagielski 2023):", ""]
    for name, c in canaries:
        lines.append(
            f"- **{name}**: {c['correct']} of {c['guesses']} guesses right on {c['canaries']} canaries "
            f"({c['included']} inserted): epsilon >= {number(c['epsilon_lb'], 2)} at {number(c['confidence'], 2)} "
            f"confidence (delta {c['delta']:g}); the most these counts could show is {number(c.get('epsilon_ceiling'), 2)}"
        )
    undetectable = ceiling_below_epsilon(report)
    if undetectable:
        lines += ["", "Empirical ceilings below the accountant's epsilon:", ""]
        lines += [f"- {line}" for line in undetectable]
    lines += ["", "## Verdicts", ""]
    for s in report["scenarios"]:
        lines.append(f"- **{s['name']}**: {verdict_text(s['verdict'])}")
        lines += [f"  - {reason}" for reason in s["verdict"]["reasons"]]
    lines += ["", f"spec sha256 `{env['spec_sha256']}`, data sha256 `{env['data_sha256']}`.", ""]
    lines += _compliance(report)
    return "\n".join(lines)


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)] + ["| " + " | ".join(row) + " |" for row in rows]


def _compliance(report: dict[str, Any]) -> list[str]:
    lines = ["## Compliance", ""]
    for line in audit_scope(report):
        lines += [line, ""]
    for item in scenario_compliance(report):
        lines += [f"### {item.scenario}: {item.verdict}", "", "Who sees what:", ""]
        lines += [f"- {party}: {sees}." for party, sees in item.threat_model]
        lines += ["", f"What leaves each site: {item.leaves_site}", "", "Formal guarantee:", ""]
        lines += [f"- {line}" for line in item.guarantee]
        lines += ["", "Measured leakage:", ""]
        lines += [f"- {line}" for line in item.leakage]
        lines += ["", f"Verdict: {item.verdict}.", ""]
        lines += [f"- {reason}" for reason in item.reasons]
        lines += ["", "Limits of this evidence:", ""]
        lines += [f"- {line}" for line in item.limits]
        lines.append("")
    return lines
