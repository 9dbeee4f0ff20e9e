"""report.md: the summary table, verdicts and compliance section, rendered from report.json alone."""

from __future__ import annotations

from fedsecure.report.compliance import audit_scope, ceiling_below_epsilon, scenario_compliance
from fedsecure.report.formatting import number
from fedsecure.report.report import Report
from fedsecure.report.study_tables import (
    COMPARISON_COLUMNS,
    comparison_rows,
    study_columns,
    study_rows,
    study_test_name,
)
from fedsecure.report.summary import (
    COST_COLUMNS,
    SEGMENTATION_COLUMNS,
    attack_tables,
    cost_rows,
    mechanism_table,
    seat_table,
    segmentation_rows,
    summary_columns,
    summary_rows,
)

QUICK_BANNER = "> **Quick run**: reduced rounds, data and attacks; a first look, not evidence."


def render_markdown(report: Report) -> str:
    """The Markdown summary of a report (for a pull request or a ticket)."""
    spec, env, baselines = report.spec, report.environment, report.baselines
    lines = [
        f"# fedsecure audit: {spec['name']}",
        "",
        f"{len(report.scenarios)} scenario(s); data `{spec['data']['source']}` over {spec['data']['sites']} sites "
        f"({spec['data']['partition']} partition); model `{spec['model']['name']}`; "
        f"{spec['federation']['strategy']}, {spec['federation']['rounds']} rounds; seed {env.seed}; "
        f"device {env.device}; fedsecure {env.fedsecure}, torch {env.torch}.",
        "",
        *([QUICK_BANNER, ""] if report.quick else []),
        *_table(summary_columns(report), summary_rows(report)),
    ]
    central, local = baselines.centralized, baselines.local_only
    lines += [
        "",
        "Baselines, same budget of passes over the data:",
        "",
        f"- centralized (all data pooled, the upper bound): {report.metric_label} "
        f"{number(report.headline(central))}, accuracy {number(central.accuracy)}",
        f"- local-only (each site alone, mean over sites on the whole test set): {report.metric_label} "
        f"{number(report.headline(local))}, accuracy {number(local.accuracy)}",
    ]
    segmentation = segmentation_rows(report)
    if segmentation:
        lines += ["", "Segmentation of the test images (pooled over the sites):", ""]
        lines += _table(SEGMENTATION_COLUMNS, segmentation)
    if report.study is not None:
        lines += ["", f"Training methods compared (the survey's study, {len(report.study.seeds)} seed(s), "
                  "no protection):", ""]
        lines += _table(study_columns(report), study_rows(report))
        lines += ["", f"The survey's findings ({study_test_name(report)}):", ""]
        lines += _table(COMPARISON_COLUMNS, comparison_rows(report))
    lines += ["", "Cost of training and protection (seconds summed over the run, bytes per round over all sites):", ""]
    lines += _table(COST_COLUMNS, cost_rows(report))
    seats = seat_table(report)
    if seats is not None:
        lines += ["", f"## {seats.title}", "", seats.note, ""]
        lines += _table(seats.columns, seats.rows)
    for attack_table in attack_tables(report):
        lines += ["", attack_table.caption, ""]
        lines += _table(attack_table.columns, attack_table.rows)
    mechanism = mechanism_table(report)
    if mechanism is not None:
        lines += ["", f"## {mechanism.title}", "", mechanism.note, ""]
        lines += _table(mechanism.columns, mechanism.rows)
    canaries = [(s.name, s.privacy.canary_audit) for s in report.scenarios if s.privacy.canary_audit is not None]
    if canaries:
        lines += ["", "One-run canary audits (Steinke, Nasr and Jagielski 2023):", ""]
    lines += [f"- **{name}**: {canary.summary()}" for name, canary in canaries if canary is not None]
    undetectable = ceiling_below_epsilon(report)
    if undetectable:
        lines += ["", "Empirical ceilings below the accountant's epsilon:", ""]
        lines += [f"- {line}" for line in undetectable]
    lines += ["", "## Verdicts", ""]
    for s in report.scenarios:
        lines.append(f"- **{s.name}**: {s.verdict.text}")
        lines += [f"  - {reason}" for reason in s.verdict.reasons]
    lines += ["", f"spec sha256 `{env.spec_sha256}`, data sha256 `{env.data_sha256}`.", ""]
    lines += _compliance(report)
    return "\n".join(lines)


def _table(columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    header = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return header + ["| " + " | ".join(row) + " |" for row in rows]


def _compliance(report: Report) -> list[str]:
    lines = ["## Compliance", ""]
    for line in audit_scope(report):
        lines += [line, ""]
    for item in scenario_compliance(report):
        lines += [f"### {item.scenario}: {item.verdict}", "", "Who sees what:", ""]
        lines += [f"- {party}: {sees}." for party, sees in item.threat_model]
        lines += ["", "What the protocol asks each party to trust:", ""]
        lines += [f"- {party}: {trust}." for party, trust in item.trust]
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
