"""Writing an audit's results: atomically, and never over another spec's results."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fedsecure.errors import OutputError

REPORT_JSON = "report.json"


def check_output_dir(out_dir: Path, spec_sha256: str) -> None:
    """Refuse an output directory that holds results of a different spec.

    Re-running the same spec into its own directory is allowed (the run is
    deterministic); anything else would overwrite someone's evidence.

    Raises:
        OutputError: ``out_dir`` is a file, or holds another spec's (or an unreadable) report.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: exists and is not a directory")
    report = out_dir / REPORT_JSON
    if not report.exists():
        return
    try:
        existing = json.loads(report.read_text())
        existing_sha = existing["environment"]["spec_sha256"]
        existing_name = existing["spec"]["name"]
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputError(f"{report}: exists and is not a fedsecure report; choose another --out") from None
    if existing_sha != spec_sha256:
        raise OutputError(
            f"{out_dir}: holds the results of another spec ({existing_name!r}); choose another --out"
        )


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` so that readers see the old file or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    write_atomic(path, json.dumps(value, indent=2, allow_nan=False) + "\n")
