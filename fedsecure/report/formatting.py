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


def epsilon_text(privacy: dict[str, Any]) -> str:
    """The headline epsilon and the party it is against; "none (no DP)", "unbounded", and "simulation" where so."""
    if privacy.get("guarantee", "none") == "none":
        return "none (no DP)"
    party = privacy.get("worst_party")
    against = f" vs {party}" if party and "alike" not in party else ""
    text = f"unbounded{against}" if privacy["epsilon"] is None else f"{number(privacy['epsilon'], 2)}{against}"
    return f"{text} (simulation: seeded noise)" if privacy.get("simulation") else text


def empirical_text(privacy: dict[str, Any]) -> str:
    """The empirical lower bound with the ceiling of the audit that produced it."""
    ceiling = privacy.get("empirical_epsilon_ceiling")
    if ceiling is None:
        return "not measured"
    if privacy.get("empirical_epsilon_lb") is None:
        return "no canary audit (ceiling 0)"
    return f"{number(privacy['empirical_epsilon_lb'], 2)} (ceiling {number(ceiling, 2)})"
