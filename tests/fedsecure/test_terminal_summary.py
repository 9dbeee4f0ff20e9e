"""The summary an audit prints at its end, rendered from the committed report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from fedsecure.report import Report
from fedsecure.report.terminal import failure_lines, render_summary, seats

FIXTURES = Path(__file__).parent.parent / "fixtures"


def fixture() -> Report:
    return Report.from_json(json.loads((FIXTURES / "report-tiny.json").read_text()))


def test_every_scenario_has_its_row_with_utility_epsilon_leakage_and_verdict(tmp_path):
    report = fixture()
    text = render_summary(report, tmp_path / "run" / "report.html", width=200)
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") > 3}
    for scenario in report.scenarios:
        row = rows[scenario.name]
        assert scenario.verdict.text in row and f"{scenario.utility.auc:.3f}" in row
    # The seats that were attacked, each its own column; the worst attack of each kind from each.
    assert seats(report) == ["server", "client", "external"]
    assert all(f"worst leakage: {seat} seat" in text for seat in ("server", "client", "external"))
    assert "idlg: +14.8 dB over prior" in rows["plain"] and "no access" in rows["ckks"]
    assert "8.00 (simulation: seeded noise)" in rows["sample-dp"]  # the fixture's noise is seeded
    assert (tmp_path / "run" / "report.html").resolve().as_uri() in text


def test_each_fail_gives_its_failing_checks_one_line_each():
    report = fixture()
    lines = failure_lines(report.scenarios)
    assert len(lines) == sum(len(s.verdict.failed) for s in report.scenarios if s.verdict.passed is False)
    assert "plain FAIL: no differential-privacy guarantee (epsilon unbounded); the spec requires epsilon <= 10" in lines
    assert any(line.startswith("sample-dp FAIL: simulation, not a guarantee") for line in lines)
    # A check that held is not a reason to fail.
    assert not any("is within" in line for line in lines)


def test_a_verdict_not_judged_says_why_and_old_reports_give_all_reasons():
    report = fixture()
    first = report.scenarios[0]
    not_judged = dataclasses.replace(first, verdict=dataclasses.replace(first.verdict, passed=None, failed=[]))
    older = dataclasses.replace(first, verdict=dataclasses.replace(first.verdict, failed=[]))  # before schema 1.4
    assert failure_lines([not_judged]) == [f"plain not judged: {r}" for r in first.verdict.reasons]
    assert failure_lines([older]) == [f"plain FAIL: {r}" for r in first.verdict.reasons]
