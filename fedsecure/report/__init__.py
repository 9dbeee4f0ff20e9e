"""Reports: typed findings and their JSON form, verdicts, compliance text, and the renderers (Markdown, HTML).

``Report.from_json(json.load(f))`` reads a report.json; ``report.to_json()``
gives it back unchanged. This package reads findings only: it imports no
engine, no audit and no Flower, so a report renders anywhere.
"""

from fedsecure.errors import ReportFormatError
from fedsecure.report.report import SCHEMA_VERSION, Report

__all__ = ["SCHEMA_VERSION", "Report", "ReportFormatError"]
