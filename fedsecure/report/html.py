"""report.html: one self-contained page (figures embedded, no script, no network) rendered from report.json.

The template autoescapes: scenario names and reasons come from a user's spec
and must never become markup.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import jinja2

from fedsecure.report import figures
from fedsecure.report.compliance import audit_scope, scenario_compliance
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


@dataclass(frozen=True)
class EmbeddedFigure:
    """A figure as the page shows it: an image carried inside the page as a data URI."""

    id: str
    title: str
    caption: str
    data_uri: str | None  # None: its file was not found (the caption says so)
    width: int | None = None  # display width in pixels for pixel images (None: the figure's own size)


PIXEL_SCALE = 4  # reconstruction grids are tiny images: shown 4x, pixels kept sharp
MAX_GRID_WIDTH = 960


def _png_width(content: bytes) -> int:
    return int.from_bytes(content[16:20], "big")  # IHDR, the first chunk, starts with the width


def _data_uri(content: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def report_figures(report: Report, report_dir: Path) -> list[EmbeddedFigure]:
    """Every figure the report has data for, in page order.

    Args:
        report: the report.
        report_dir: its directory (reconstruction grids are files beside it).
    """
    drawn = [
        ("frontier", "Privacy-utility frontier", figures.frontier_figure(report),
         f"Test {report.metric_label} of each scenario against the accountant's epsilon (left; no DP at the right "
         "edge) and against the measured attack success (right). Reference lines: the centralized and local-only "
         "baselines."),
        ("utility-rounds", "Utility over rounds", figures.utility_figure(report),
         f"Test {report.metric_label} of the global model after each round."),
        ("roc", "Membership inference ROC (log-log)", figures.roc_figure(report),
         "ROC curves of the membership attacks on the released model, on log axes so that the low false-positive "
         "region, where an attack is dangerous, is visible. Below the vertical line there are too few non-members "
         "to resolve the rate."),
        ("epsilon-rounds", "Epsilon over rounds", figures.epsilon_figure(report),
         "The privacy budget spent after each round, by the scenario's accountant; dashed: the target."),
        ("study", "Training methods compared", figures.study_figure(report),
         f"The study's methods: pooled test {report.metric_label} (mean over seeds, with its interval) and each "
         "site's test share (small markers), without protection."),
    ]
    embedded = [
        EmbeddedFigure(id=f"fig-{name}", title=title, caption=caption,
                       data_uri=_data_uri(svg.encode("utf-8"), "image/svg+xml"))
        for name, title, svg, caption in drawn
        if svg is not None
    ]
    for scenario in report.scenarios:
        if scenario.utility.examples is not None:
            embedded.append(_grid(
                report_dir, scenario.utility.examples, f"fig-segmentation-{scenario.name}",
                f"Example segmentations: {scenario.name}",
                "Test images (top), their true masks (middle) and the released model's masks (bottom); classes "
                "shade from black (background) to white.",
            ))
        for attack in scenario.attacks:
            image = attack.image_grid()
            if image is not None:
                # One grid per attack and seat: the file's name tells them apart ("inversion-plain-client").
                embedded.append(_grid(report_dir, image.file, f"fig-{Path(image.file).stem}",
                                      f"{image.title}: {scenario.name}, {attack.seat_words}", image.caption))
    return embedded


def _grid(report_dir: Path, file: str, figure_id: str, title: str, caption: str) -> EmbeddedFigure:
    """A PNG grid written beside report.json, embedded (only from inside the report's directory)."""
    path = (report_dir / file).resolve()
    found = path.is_file() and path.is_relative_to(report_dir.resolve())
    grid = path.read_bytes() if found else b""
    return EmbeddedFigure(
        id=figure_id, title=title,
        caption=caption if found else f"The grid's file {file} was not found beside report.json.",
        data_uri=_data_uri(grid, "image/png") if found else None,
        width=min(PIXEL_SCALE * _png_width(grid), MAX_GRID_WIDTH) if found else None,
    )


def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("fedsecure", "report/templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(number=number)
    return environment


def render_html(report: Report, report_dir: Path) -> str:
    """The HTML report of ``report`` (its figure files are read from ``report_dir``, beside report.json)."""
    return _environment().get_template("report.html.j2").render(
        report=report,
        summary_columns=summary_columns(report),
        summary_rows=summary_rows(report),
        cost_columns=COST_COLUMNS,
        cost_rows=cost_rows(report),
        segmentation_columns=SEGMENTATION_COLUMNS,
        segmentation_rows=segmentation_rows(report),
        study_columns=study_columns(report),
        study_rows=study_rows(report),
        comparison_columns=COMPARISON_COLUMNS,
        comparison_rows=comparison_rows(report),
        study_test=study_test_name(report),
        attack_tables=attack_tables(report),
        mechanism=mechanism_table(report),
        seats=seat_table(report),
        figures=report_figures(report, report_dir),
        scope=audit_scope(report),
        compliance=scenario_compliance(report),
    )
