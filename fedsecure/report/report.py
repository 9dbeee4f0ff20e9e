"""The whole report: what report.json holds, as typed findings that read it and write it back unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedsecure.errors import ReportFormatError
from fedsecure.report.environment import Environment
from fedsecure.report.json_form import from_json, to_json
from fedsecure.report.scenario import ScenarioFinding
from fedsecure.report.study_finding import StudyFinding
from fedsecure.report.utility import Baselines

# The JSON schema of report.json. A new minor version only adds fields (older reports still read, their new
# fields at their defaults); a new major version changes what existing fields mean, and is refused.
SCHEMA_VERSION = "1.9"

#: How the tables and figures name each headline metric (a utility field).
METRIC_LABELS = {"auc": "AUC", "dice": "Dice"}


@dataclass(frozen=True)
class Report:
    """An audit's report: the spec as run, the environment, the baselines and every scenario's findings.

    ``spec`` is the validated spec as it was run, with its ``origin`` (free-form:
    its keys are the spec's own contract, see fedsecure.config.spec).
    ``quick`` marks a reduced run (not evidence); ``only`` names the scenarios
    run with ``--only`` (None: all). ``wall_seconds`` is the audit's compute
    time summed over its stages, so that it survives a resume. ``metric`` names the
    utility field the task is judged by (``auc``: classification; ``dice``: segmentation). ``study`` is
    the spec's ``[study]`` (schema 1.8; None without one).

    ``Report.from_json(d).to_json() == d`` for every report fedsecure writes.
    """

    schema_version: str
    spec: dict[str, Any]
    quick: bool
    only: list[str] | None
    environment: Environment
    baselines: Baselines
    scenarios: list[ScenarioFinding]
    wall_seconds: float
    metric: str = "auc"
    study: StudyFinding | None = None

    @property
    def metric_label(self) -> str:
        """The headline metric's name as tables and figures print it."""
        return METRIC_LABELS.get(self.metric, self.metric)

    def headline(self, utility: Any) -> float | None:
        """``utility``'s headline metric (any utility record: a scenario's, a baseline's, a round's)."""
        value = getattr(utility, self.metric, None)
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        """report.json's content."""
        form: dict[str, Any] = to_json(self)
        return form

    @classmethod
    def from_json(cls, data: object) -> Report:
        """A report read from report.json's content (as ``json.load`` gives it).

        Raises:
            ReportFormatError: not a report, a report of another schema major
                version, or a field missing or of the wrong type, or unknown in a
                report of this very version (the message names it, e.g.
                ``report.scenarios[1].cost.train_seconds``).
        """
        if not isinstance(data, dict) or "schema_version" not in data:
            raise ReportFormatError("not a fedsecure report (no schema_version)")
        version = str(data["schema_version"])
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise ReportFormatError(
                f"report schema {version} cannot be read by this fedsecure (schema {SCHEMA_VERSION})"
            )
        # Another minor version's fields are skipped, not refused: they only ever add (or, before 1.3, drop) fields.
        return from_json(cls, data, "report", unknown_fields=version != SCHEMA_VERSION)

    @property
    def spec_name(self) -> str:
        """The audited spec's name."""
        return str(self.spec["name"])
