"""The compliance section: per scenario, who sees what, the guarantee, the measured leakage, the limits.

Built from report.json alone, as plain statements that the HTML and Markdown
renderers format the same way. The wording states facts and their limits; it
claims nothing the audit did not measure or the mathematics does not give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fedsecure.report.formatting import bytes_text, number, signed, verdict_text


@dataclass(frozen=True)
class ScenarioCompliance:
    """What a data-protection officer needs to know about one scenario."""

    scenario: str
    threat_model: list[tuple[str, str]]  # (party, what it sees)
    leaves_site: str
    guarantee: list[str]
    leakage: list[str]
    verdict: str
    reasons: list[str]
    limits: list[str]


def audit_scope(report: dict[str, Any]) -> list[str]:
    """What was audited, on what, by which software: the statements that head the section."""
    spec, env = report["spec"], report["environment"]
    data = spec["data"]
    source = "synthetic phantom images generated from the seed" if data["source"] == "synthetic" else (
        f"the MedMNIST-format file {data['path'].rsplit('/', 1)[-1]} (sha256 {env['data_sha256']})"
    )
    lines = [
        f"Audit {spec['name']!r}: {len(report['scenarios'])} scenario(s) of {spec['federation']['strategy']} over "
        f"{data['sites']} sites ({data['partition']} partition), model {spec['model']['name']}, "
        f"{spec['federation']['rounds']} rounds, seed {env['seed']}, on {source}.",
        f"Spec sha256 {env['spec_sha256']}; fedsecure {env['fedsecure']}, torch {env['torch']}, device {env['device']}.",
    ]
    if report.get("quick"):
        lines.append(
            "QUICK RUN: fewer rounds, images and reference models than the spec asks for. "
            "These figures are a first look, not evidence; do not file this report."
        )
    if report.get("only"):
        lines.append(f"Only these scenarios were run (--only): {', '.join(report['only'])}. The others are not covered.")
    return lines


def scenario_compliance(report: dict[str, Any]) -> list[ScenarioCompliance]:
    """One statement per scenario of ``report``."""
    return [
        ScenarioCompliance(
            scenario=s["name"],
            threat_model=_threat_model(s),
            leaves_site=_leaves_site(s),
            guarantee=_guarantee(s),
            leakage=_leakage(s),
            verdict=verdict_text(s["verdict"]),
            reasons=list(s["verdict"]["reasons"]),
            limits=_limits(report, s),
        )
        for s in report["scenarios"]
    ]


def _client_dp(scenario: dict[str, Any]) -> dict[str, Any] | None:
    dp = scenario["dp"]
    return dp if dp is not None and dp["level"] == "client" else None


def _threat_model(scenario: dict[str, Any]) -> list[tuple[str, str]]:
    dp, client_dp = scenario["dp"], _client_dp(scenario)
    if scenario["server_view"] == "ciphertext":
        server = (
            "receives only CKKS ciphertexts of the sites' updates, holds no decryption key, and adds them without "
            "reading them; it learns which sites took part and the size of their messages"
        )
    elif client_dp is not None and client_dp.get("placement") == "central":
        server = (
            "reads every site's clipped update in plaintext before any noise is added; it is trusted to add the "
            "noise, and the client-level guarantee does not hold against it"
        )
    elif client_dp is not None:
        server = (
            "reads every site's clipped update in plaintext, each carrying only its own share of the noise; "
            "against the server alone a site is protected far less than the stated epsilon"
        )
    elif dp is not None:
        server = "reads every site's update in plaintext; each update is the output of DP-SGD at that site"
    else:
        server = "reads every site's model update in plaintext, every round"
    sites = (
        "receive the global model every round, computed from all participating sites' updates, and know who took "
        "part and the noise share they added themselves"
        + (" (the sites decrypt the encrypted sum together: they share the CKKS secret key)"
           if scenario["server_view"] == "ciphertext" else "")
    )
    return [
        ("aggregation server", server),
        ("other participating sites", sites),
        ("anyone given the released model", "sees the final global model only"),
    ]


def _leaves_site(scenario: dict[str, Any]) -> str:
    dp = scenario["dp"]
    what = f"a model update of {scenario['parameters']:,} parameters each round" if scenario["parameters"] else (
        "a model update each round"
    )
    sites = max(1, max(len(r["participants"]) for r in scenario["rounds"])) if scenario["rounds"] else 1
    size = bytes_text(scenario["cost"]["bytes_up_per_round"] / sites)
    form = "encrypted under CKKS" if scenario["server_view"] == "ciphertext" else "in plaintext"
    if dp is not None and dp["level"] == "sample":
        made = f", trained with DP-SGD (each image's gradient clipped to norm {dp['clip']:g}, Gaussian noise added)"
    elif dp is not None:
        placement = "the site adds its share of the Gaussian noise" if dp.get("placement") == "distributed" else (
            "the server adds the Gaussian noise"
        )
        made = f", clipped to norm {dp['clip']:g} ({placement})"
    else:
        made = ""
    return (
        f"{what}{made}, sent {form} ({size} per site per round) with its weight. No training image or label leaves "
        f"a site. {EVALUATION_LEAVES}"
    )


EVALUATION_LEAVES = (
    "To pool the test AUC, each site also sends, after each round, per-class histograms of its test images' "
    "scores (bins 2^-10 wide in logit) with their labels and a confusion matrix (on Flower; in-process the "
    "auditor pools the same figure): no test image, and no score or label tied to an image, but the "
    "histograms give each test score to within its bin with the labels in that bin, so whoever holds one of a "
    "site's test images and the model can read that image's label."
)

PARTY_NAMES = {"public": "anyone given the released model", "server": "the aggregation server",
               "site": "another participating site"}


def _guarantee(scenario: dict[str, Any]) -> list[str]:
    privacy, dp = scenario["privacy"], scenario["dp"]
    if privacy.get("guarantee", "none") == "none":
        lines = ["No formal privacy guarantee: no differential privacy is applied."]
        if scenario["server_view"] == "ciphertext":
            lines.append(
                "Encryption hides each site's update from the server, but the global models and the released "
                "model are computed from the data without noise."
            )
        return lines
    lines = []
    if privacy.get("simulation"):
        lines.append(
            "SIMULATION, NOT A GUARANTEE: the noise derives from the spec's seed printed in report.json "
            "(secure_rng = false); anyone who reads it can subtract the noise. The figures below are what the "
            "mechanism would give with secret noise."
        )
    headline = "unbounded" if privacy["epsilon"] is None else number(privacy["epsilon"], 2)
    worst = privacy.get("worst_party")
    if dp["level"] == "sample":
        lines += [
            f"({headline}, {privacy['delta']:g})-differential privacy per training image at each site (the worst "
            "site's figure), against every party: each sees that site's DP-SGD output, or less, and the site's "
            "size, which is public.",
            "The unit of privacy is one image: a patient with k images in a site's data is protected at about k "
            "times epsilon (group privacy).",
        ]
    else:
        substitution = "" if privacy["epsilon"] is None else (
            f" Telling which of two datasets a hospital holds is bounded by twice that: epsilon "
            f"{number(2 * privacy['epsilon'], 2)} at delta {(1 + math.exp(privacy['epsilon'])) * privacy['delta']:.3g} "
            "(group privacy)."
        )
        lines.append(
            f"Client-level differential privacy, per site: epsilon {headline} at delta {privacy['delta']:g} against "
            f"the worst party ({PARTY_NAMES.get(worst, worst)}). It bounds what the models reveal about one "
            "hospital's training data, against the same run with that hospital's whole message replaced by zero "
            "(zero-out); which hospitals took part is not hidden, nor are the sizes and test-set metrics the "
            f"sites report.{substitution}"
        )
    for party, guarantee in (privacy.get("epsilon_by_adversary") or {}).items():
        value = "no differential privacy" if guarantee["epsilon"] is None else f"epsilon {number(guarantee['epsilon'], 2)}"
        amplification = (f", amplified by sampling rate {number(guarantee['sample_rate'], 3)}"
                         if guarantee["sample_rate"] < 1 else "")
        facing = "" if guarantee["noise_multiplier"] is None else (
            f" (noise multiplier {number(guarantee['noise_multiplier'], 3)} over {guarantee['steps']} compositions"
            f"{amplification}, {guarantee['accounting']})"
        )
        lines.append(
            f"Against {PARTY_NAMES.get(party, party)}, who sees {guarantee['sees']}: {value}{facing}; assuming "
            + "; ".join(guarantee["assumptions"]) + "."
        )
    rounds = privacy.get("rounds_completed")
    lines.append(
        f"Accountant {privacy['accountant']}: noise multiplier {number(privacy['noise_multiplier'], 3)}, "
        f"sampling rate {number(privacy['sample_rate'], 4)}, {privacy['steps']} steps"
        + (f" over {rounds} rounds" if rounds is not None else "") + "."
    )
    if privacy.get("stopped_early"):
        lines.append("Training stopped early: one more round would have exceeded the target epsilon.")
    lines += [f"Weakened: {warning}" for warning in privacy.get("warnings", [])]
    return lines


def ceiling_below_epsilon(report: dict[str, Any]) -> list[str]:
    """For each DP scenario whose empirical audit could not have shown its accountant's epsilon, one line saying so."""
    lines = []
    for s in report["scenarios"]:
        privacy = s["privacy"]
        ceiling = privacy.get("empirical_epsilon_ceiling")
        if privacy.get("guarantee", "none") == "none" or ceiling is None:
            continue
        if privacy["epsilon"] is not None and ceiling >= privacy["epsilon"]:
            continue
        stated = "unbounded" if privacy["epsilon"] is None else number(privacy["epsilon"], 2)
        how = "no randomised canaries were run" if privacy.get("canary_audit") is None else (
            f"{privacy['canary_audit']['canaries']} canaries, {privacy['canary_audit']['guesses']} guesses")
        lines.append(
            f"{s['name']}: the empirical audit ({how}) could show at most epsilon {number(ceiling, 2)}, below the "
            f"accountant's {stated}: it could not have detected an overspent privacy budget."
        )
    return lines


def _leakage(scenario: dict[str, Any]) -> list[str]:
    lines = []
    for attack in scenario["attacks"]:
        where = f"{attack['method']} from the {attack['position']} position"
        if attack["status"] == "no_access":
            lines.append(f"{where}: no access ({attack['reason']}).")
        elif attack["status"] != "ok":
            lines.append(f"{where}: not run ({attack['reason']}).")
        elif attack["attack"] == "inversion":
            lines.append(
                f"Gradient inversion, {where}, on {attack['images']} images of {attack['site']}: median PSNR "
                f"{number(attack['psnr_median'], 1)} dB against {number(attack['prior_psnr_median'], 1)} dB for the "
                f"attacker's prior image (gain {signed(attack['psnr_gain_median'])} dB); labels recovered "
                f"{number(None if attack['label_accuracy'] is None else 100 * attack['label_accuracy'], 0)}%."
            )
        else:
            rate = attack["tpr_at_fpr"].get("0.01")
            detail = "" if rate is None else (
                f", {100 * rate['tpr']:.1f}% of members found at 1% false positives "
                f"(interval {100 * rate['low']:.1f}-{100 * rate['high']:.1f}%)"
            )
            lines.append(
                f"Membership inference, {where}, on {attack['members']} members and {attack['non_members']} "
                f"non-members: AUC {number(attack['auc'])}{detail}; advantage {number(attack['advantage'])} "
                "(membership of real training data is not randomised, so this bounds no epsilon)."
            )
    canary = scenario["privacy"].get("canary_audit")
    if canary:
        found = (
            f"so epsilon is at least {number(canary['epsilon_lb'], 2)}" if canary["epsilon_lb"] > 0
            else "which does not show any epsilon above 0"
        )
        lines.append(
            f"One-run canary audit: {canary['correct']} of {canary['guesses']} guesses right on {canary['canaries']} "
            f"mislabelled canaries, {found} (at {number(canary['confidence'], 2)} confidence); with every guess "
            f"right it could have shown at most {number(canary.get('epsilon_ceiling'), 2)}."
        )
    if not lines:
        lines.append("Not measured: the spec runs no attacks against this scenario.")
    return lines


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _limits(report: dict[str, Any], scenario: dict[str, Any]) -> list[str]:
    attacks = scenario["attacks"]
    kinds = {a["attack"] for a in attacks if a["status"] in ("ok", "no_access")}
    lines = [
        "Attacks show what at least leaks: a stronger attack than those run here may recover more. An empirical "
        "lower bound on epsilon is not a proof of privacy."
    ]
    if scenario["privacy"]["epsilon"] is None:
        lines.append("Without differential privacy nothing bounds what the models reveal beyond the attacks measured.")
    else:
        lines.append(
            "The formal guarantee holds if the implementation is correct and the noise is unpredictable to the "
            "adversary; it says nothing about information in the data that is not specific to one unit of privacy."
        )
    lines += [_sentence(line.split(": ", 1)[1]) for line in ceiling_below_epsilon({"scenarios": [scenario]})]
    lines.append(
        "The server is assumed honest but curious: it follows the protocol and only reads what it receives. A "
        "malicious server could choose who takes part, replay messages or forge an aggregate's weight (CKKS "
        "lets it encrypt values of its own); the sites check the study's spec, its site count, their own size "
        "and the weight total of every aggregate they decrypt, which catches a mistaken server, not a malicious one."
    )
    if scenario["server_view"] == "ciphertext":
        lines.append(
            "Encryption protects the updates from the server only if the server does not collude with a site: "
            "every site holds the same secret key, so a server colluding with one site reads every update. It "
            "does not protect the released model, nor the updates from the other sites (they see every aggregate)."
        )
    if "inversion" not in kinds:
        lines.append("Reconstruction of training images was not measured.")
    if "membership" not in kinds:
        lines.append("Membership inference was not measured.")
    else:
        positions = sorted({a["position"] for a in attacks if a["attack"] == "membership"})
        lines.append(
            f"Membership was measured from the {', '.join(positions)} position only; the server and the sites see "
            "every intermediate model, which may reveal more."
        )
    for attack in attacks:
        if attack["attack"] == "membership" and attack["status"] == "ok":
            unresolved = [f for f, r in attack["tpr_at_fpr"].items() if not r["resolved"]]
            if unresolved:
                lines.append(
                    f"{attack['non_members']} non-members cannot resolve false-positive rates of "
                    f"{', '.join(f'{100 * float(f):g}%' for f in unresolved)}; the rate at zero false positives is "
                    "given instead."
                )
                break
    for attack in attacks:
        if attack["attack"] == "inversion" and attack["status"] == "ok":
            lines.append(
                f"Inversion was run on {attack['images']} images of one site, {attack['batch_size']} image(s) per update; "
                "larger batches and more local steps make it harder, so the result holds for this setting."
            )
            break
    data = report["spec"]["data"]
    lines.append(
        f"The figures hold for this data ({data['source']}, {data['sites']} sites) and these settings; another "
        "dataset, model or schedule needs its own audit."
    )
    if scenario.get("engine") == "flower":
        lines.append(
            "The federation ran on Flower, one SuperNode per site. The pooled test AUC was computed from the "
            "sites' score histograms (see what leaves each site); it differs from the exact AUC only on pairs of "
            "test images from two sites whose scores share a bin."
        )
    for event in scenario.get("events", []):
        lines.append(f"During training: {event}.")
    if report.get("quick"):
        lines.append("Quick run: reduced settings; not evidence.")
    return lines
