"""The study's tables as every rendering shows them: methods by site, and the survey's findings tested."""

from __future__ import annotations

from fedsecure.report.formatting import number
from fedsecure.report.report import Report


def study_columns(report: Report) -> tuple[str, ...]:
    """Method, the pooled metric with its interval, then one column per site's test share."""
    study = report.study
    if study is None:
        return ()
    sites = [value.site for value in study.methods[0].per_site]
    level = f"{round(study.confidence * 100):d}%"
    return ("method", "trains", f"pooled {report.metric_label} (mean, {level} interval)", "mean over sites", *sites)


def study_rows(report: Report) -> list[tuple[str, ...]]:
    """One row per method, in the survey's order (empty without a study)."""
    if report.study is None:
        return []
    rows = []
    for method in report.study.methods:
        interval = (f" [{number(method.interval[0])}, {number(method.interval[1])}]"
                    if method.interval is not None else "")
        rows.append((method.name, method.description, f"{number(method.mean)}{interval}", number(method.site_mean),
                     *(number(value.mean) for value in method.per_site)))
    return rows


COMPARISON_COLUMNS = ("finding", "pairs", "mean difference", "p-value", "direction here")


def comparison_rows(report: Report) -> list[tuple[str, ...]]:
    """The survey's findings, each with its paired test (empty without a study)."""
    if report.study is None:
        return []
    return [
        (f"{c.better} above {c.worse}", str(c.n_pairs), number(c.mean_difference), number(c.p_value, 3),
         "n/a" if c.holds is None else ("as the survey" if c.holds else "reversed"))
        for c in report.study.comparisons
    ]


def study_test_name(report: Report) -> str:
    """The test every comparison ran (one for the whole table)."""
    if report.study is None or not report.study.comparisons:
        return ""
    return report.study.comparisons[0].test
