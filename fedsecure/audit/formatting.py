"""How figures read in the rendered reports (HTML and Markdown share these)."""

from __future__ import annotations

from typing import Any


def number(value: float | None, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; "n/a" where it was not measured."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def signed(value: float | None) -> str:
    """A gain or loss, with its sign."""
    return "n/a" if value is None else f"{value:+.1f}"


def bytes_text(value: float | None) -> str:
    """A size in B, KiB, MiB or GiB."""
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def verdict_text(verdict: dict[str, Any]) -> str:
    """PASS, FAIL, or "not judged" (no thresholds in the spec)."""
    return {True: "PASS", False: "FAIL", None: "not judged"}[verdict["pass"]]


def rate_text(attack: dict[str, Any], level: str) -> str:
    """A TPR at a fixed FPR with its interval, and where the FPR could not be resolved, what was given instead."""
    rate = attack["tpr_at_fpr"].get(level)
    if rate is None:
        return "n/a"
    text = f"{rate['tpr']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"
    return text if rate["resolved"] else f"{text} (at 0 false positives: too few non-members)"


def epsilon_text(value: float | None) -> str:
    """An accountant's epsilon; "none (no DP)" where no guarantee exists."""
    return "none (no DP)" if value is None else number(value, 2)
