"""How figures read in the rendered reports (HTML and Markdown share these)."""

from __future__ import annotations

import math


def _measured(value: float | None) -> bool:
    # None: not measured; NaN: undefined (report.json's null in a float field reads back as NaN)
    return value is not None and not math.isnan(value)


def number(value: float | None, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; "n/a" where it was not measured or is undefined."""
    return f"{value:.{digits}f}" if _measured(value) else "n/a"


def signed(value: float | None) -> str:
    """A gain or loss, with its sign."""
    return f"{value:+.1f}" if _measured(value) else "n/a"


def bytes_text(value: float | None) -> str:
    """A size in B, KiB, MiB or GiB."""
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def verdict_text(passed: bool | None) -> str:
    """PASS, FAIL, or "not judged" (no thresholds in the spec)."""
    return {True: "PASS", False: "FAIL", None: "not judged"}[passed]
