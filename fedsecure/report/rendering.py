"""Rendering report.md and report.html from report.json (after an audit, or again with ``fedsecure report``)."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from fedsecure.errors import OutputError, ReportFormatError
from fedsecure.report.html import render_html
from fedsecure.report.markdown import render_markdown
from fedsecure.report.output import REPORT_JSON, STAGES, write_atomic
from fedsecure.report.report import SCHEMA_VERSION, Report

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


def render_reports(report: Report, report_dir: Path) -> list[Path]:
    """Write report.md and report.html beside report.json; returns their paths.

    Both are rendered before either is written, so a rendering error leaves
    the earlier files as they were.
    """
    rendered = {
        report_dir / REPORT_MD: render_markdown(report),
        report_dir / REPORT_HTML: render_html(report, report_dir),
    }
    for path, text in rendered.items():
        write_atomic(path, text)
    return list(rendered)


def load_report(report_dir: Path) -> Report:
    """The report.json of an audit directory.

    Raises:
        OutputError: no such directory or report, or not a report this version can render.
    """
    path = report_dir / REPORT_JSON
    if not report_dir.is_dir():
        raise OutputError(f"{report_dir}: no such audit directory")
    if not path.is_file():
        unfinished = (report_dir / STAGES).is_dir()
        hint = (
            "; the audit did not finish: `fedsecure audit SPEC --out DIR --resume` completes it" if unfinished else ""
        )
        raise OutputError(f"{path}: no such report{hint}")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OutputError(f"{path}: not a readable JSON report ({exc})") from None
    if not isinstance(content, dict) or "schema_version" not in content:
        raise OutputError(f"{path}: not a fedsecure report (no schema_version)")
    major = str(content["schema_version"]).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise OutputError(
            f"{path}: report schema {content['schema_version']} cannot be rendered by this fedsecure "
            f"(schema {SCHEMA_VERSION})"
        )
    try:
        return Report.from_json(content)
    except ReportFormatError as exc:
        raise OutputError(f"{path}: incomplete or altered report ({exc})") from None


def rerender(report_dir: Path) -> list[Path]:
    """Render report.md and report.html again from ``report_dir/report.json``.

    Raises:
        OutputError: as :func:`load_report`, or a value the renderers cannot show (an altered report).
    """
    report = load_report(report_dir)
    try:
        return render_reports(report, report_dir)
    except (KeyError, TypeError, ValueError, AttributeError, jinja2.TemplateError) as exc:
        # The typed report has every field; the spec and the DP settings stay free-form (they are the spec's own
        # sections), so an altered one can still lack what the renderers show.
        raise OutputError(
            f"{report_dir / REPORT_JSON}: incomplete or altered report ({type(exc).__name__}: {exc})"
        ) from None
