"""The report's tables (summary, cost, attacks) as rows of text: the same columns in report.md and report.html."""

from __future__ import annotations

from typing import Any

from fedsecure.report.formatting import bytes_text, empirical_text, epsilon_text, number, rate_text, signed, verdict_text

SUMMARY_COLUMNS = (
    "scenario", "protection", "AUC", "accuracy", "epsilon (worst party)", "empirical epsilon", "attack success",
    "train + protect s", "up / round", "verdict",
)


def protection_text(scenario: dict[str, Any]) -> str:
    """The scenario's protocol and differential privacy, in a few words."""
    dp = scenario["dp"]
    parts = [scenario["protocol"]]
    if dp is not None:
        placement = f", {dp['placement']}" if dp.get("placement") else ""
        parts.append(f"{dp['level']}-level DP (target epsilon {dp['epsilon']:g}{placement})")
    return " + ".join(parts)


def attack_success_text(scenario: dict[str, Any]) -> str:
    """Each attack's headline: membership TPR at 1% FPR, inversion gain over the prior, or no access."""
    parts = []
    for attack in scenario["attacks"]:
        if attack["status"] != "ok":
            parts.append(f"{attack['method']}: {attack['status'].replace('_', ' ')}")
        elif attack["attack"] == "inversion":
            parts.append(f"{attack['method']}: {signed(attack['psnr_gain_median'])} dB over prior")
        else:
            rate = attack["tpr_at_fpr"].get("0.01")
            parts.append(f"{attack['method']}: TPR {number(rate['tpr'] if rate else None)} at 1% FPR")
    return "; ".join(parts) if parts else "not measured"


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The summary table's rows, as text, in SUMMARY_COLUMNS order."""
    rows = []
    for s in report["scenarios"]:
        cost = s["cost"]
        rows.append((
            s["name"],
            protection_text(s),
            number(s["utility"]["auc"]),
            number(s["utility"]["accuracy"]),
            epsilon_text(s["privacy"]),
            empirical_text(s["privacy"]),
            attack_success_text(s),
            number(cost["train_seconds"] + cost["protect_seconds"], 1),
            bytes_text(cost["bytes_up_per_round"]),
            verdict_text(s["verdict"]),
        ))
    return rows


COST_COLUMNS = (
    "scenario", "train s", "encrypt s", "aggregate s", "decrypt s", "attacks s", "up / round", "down / round",
    "bytes / parameter", "key setup",
)


def cost_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The cost table's rows, as text, in COST_COLUMNS order."""
    return [
        (
            s["name"],
            number(s["cost"]["train_seconds"], 1),
            number(s["cost"]["encrypt_seconds"], 2),
            number(s["cost"]["aggregate_seconds"], 2),
            number(s["cost"]["decrypt_seconds"], 2),
            number(s.get("attack_seconds"), 1),
            bytes_text(s["cost"]["bytes_up_per_round"]),
            bytes_text(s["cost"]["bytes_down_per_round"]),
            number(s["cost"]["bytes_per_parameter"], 1),
            bytes_text(s["cost"]["setup_bytes"]),
        )
        for s in report["scenarios"]
    ]


INVERSION_COLUMNS = (
    "scenario", "attack", "position", "status", "median PSNR", "prior PSNR", "gain (dB)", "median SSIM",
    "prior SSIM", "labels",
)


def inversion_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The gradient-inversion table's rows, as text, in INVERSION_COLUMNS order."""
    return [
        (
            s["name"], a["method"], a["position"], a["status"].replace("_", " "), number(a["psnr_median"], 1),
            number(a["prior_psnr_median"], 1), signed(a["psnr_gain_median"]), number(a["ssim_median"]),
            number(a["prior_ssim_median"]), number(a["label_accuracy"], 2),
        )
        for s in report["scenarios"] for a in s["attacks"] if a["attack"] == "inversion"
    ]


MEMBERSHIP_COLUMNS = (
    "scenario", "attack", "position", "status", "AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "advantage",
    "epsilon (worst party)",
)


def membership_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """The membership-inference table's rows, as text, in MEMBERSHIP_COLUMNS order."""
    return [
        (
            s["name"], a["method"], a["position"], a["status"].replace("_", " "), number(a["auc"]),
            rate_text(a, "0.01"), rate_text(a, "0.001"), number(a["advantage"]), epsilon_text(s["privacy"]),
        )
        for s in report["scenarios"] for a in s["attacks"] if a["attack"] == "membership"
    ]


def membership_confidence(report: dict[str, Any]) -> float | None:
    """The confidence of the membership attacks' intervals (one per audit), None without them."""
    return next((a["confidence"] for s in report["scenarios"] for a in s["attacks"] if a["attack"] == "membership"), None)
