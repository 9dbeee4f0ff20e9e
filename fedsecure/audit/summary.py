"""The summary table, one row per scenario: the same columns in report.md and report.html."""

from __future__ import annotations

from typing import Any

from fedsecure.audit.formatting import bytes_text, epsilon_text, number, signed, verdict_text

SUMMARY_COLUMNS = (
    "scenario", "protection", "AUC", "accuracy", "epsilon", "empirical epsilon", "attack success",
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
            epsilon_text(s["privacy"]["epsilon"]),
            number(s["privacy"]["empirical_epsilon_lb"], 2),
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
