"""The compliance section: per scenario, who sees what, the guarantee, the measured leakage, the limits.

Built from report.json alone, as plain statements that the HTML and Markdown
renderers format the same way. The wording states facts and their limits; it
claims nothing the audit did not measure or the mathematics does not give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedsecure.audit.formatting import bytes_text, number, signed, verdict_text


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
        "receive the global model every round, computed from all participating sites' updates"
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
    return f"{what}{made}, sent {form} ({size} per site per round) with its weight. No image or label leaves a site."


def _guarantee(scenario: dict[str, Any]) -> list[str]:
    privacy, dp = scenario["privacy"], scenario["dp"]
    if privacy["epsilon"] is None:
        lines = ["No formal privacy guarantee: no differential privacy is applied."]
        if scenario["server_view"] == "ciphertext":
            lines.append(
                "Encryption hides each site's update from the server, but the global models and the released "
                "model are computed from the data without noise."
            )
        return lines
    if dp["level"] == "sample":
        lines = [
            f"({number(privacy['epsilon'], 2)}, {privacy['delta']:g})-differential privacy per training image at each "
            "site (the worst site's figure), against anyone who sees that site's updates or any model built from them.",
            "The unit of privacy is one image: a patient with k images in a site's data is protected at about k "
            "times epsilon (group privacy).",
        ]
    else:
        lines = [
            f"({number(privacy['epsilon'], 2)}, {privacy['delta']:g})-differential privacy per site (client level): "
            "whether a whole hospital took part is protected in the sequence of global models and the released model."
        ]
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
                f"non-members: AUC {number(attack['auc'])}{detail}; empirical epsilon lower bound "
                f"{number(attack['epsilon_lb'], 2)}."
            )
    canary = scenario["privacy"].get("canary_audit")
    if canary:
        found = (
            f"so epsilon is at least {number(canary['epsilon_lb'], 2)}" if canary["epsilon_lb"] > 0
            else "which does not show any epsilon above 0"
        )
        lines.append(
            f"One-run canary audit: {canary['correct']} of {canary['guesses']} guesses right on {canary['canaries']} "
            f"mislabelled canaries, {found} (at {number(canary['confidence'], 2)} confidence)."
        )
    if not lines:
        lines.append("Not measured: the spec runs no attacks against this scenario.")
    return lines


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
    if scenario["server_view"] == "ciphertext":
        lines.append(
            "Encryption protects the updates from the server only if the server does not collude with a site: "
            "every site holds the secret key. It does not protect the released model."
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
            "The federation ran on Flower, one SuperNode per site. To pool the test AUC, each site sent the server "
            "its predictions and labels on its own test split (no images) after every round."
        )
    for event in scenario.get("events", []):
        lines.append(f"During training: {event}.")
    if report.get("quick"):
        lines.append("Quick run: reduced settings; not evidence.")
    return lines
