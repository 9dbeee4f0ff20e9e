"""The compliance section: per scenario, who sees what, the guarantee, the measured leakage, the limits.

Built from report.json alone, as plain statements that the HTML and Markdown
renderers format the same way. The wording states facts and their limits; it
claims nothing the audit did not measure or the mathematics does not give.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedsecure.report.attack_kinds import ATTACK_FINDINGS
from fedsecure.report.formatting import bytes_text, number
from fedsecure.report.privacy_finding import PARTY_NAMES
from fedsecure.report.protocol_trust import protocol_trust
from fedsecure.report.report import Report
from fedsecure.report.scenario import ScenarioFinding


@dataclass(frozen=True)
class ScenarioCompliance:
    """What a data-protection officer needs to know about one scenario."""

    scenario: str
    threat_model: list[tuple[str, str]]  # (party, what it sees)
    trust: list[tuple[str, str]]  # (party or topic, what the protocol and transport ask it to trust)
    leaves_site: str
    guarantee: list[str]
    leakage: list[str]
    verdict: str
    reasons: list[str]
    limits: list[str]


def _file_name(path: str | None) -> str:
    return str(path).rsplit("/", 1)[-1]


def _files_words(data: dict[str, Any], sha256: str) -> str:
    lists = [f"{site['name']} ({_file_name(site['datalist'])})" for site in data.get("site") or []]
    held = f"the datalists {', '.join(lists)}" if lists else f"the datalist {_file_name(data.get('datalist'))}"
    size = f", brought to {'x'.join(map(str, data['size']))} by {data['size_mode']}" if data.get("size") else ""
    scaling = f"window {data['window']}" if data.get("window") else f"percentiles {data['percentiles']}"
    return f"image files listed by {held} (intensities by {scaling}{size}; decoded images' sha256 {sha256})"


# What the audit ran on, by data source (the spec's `data.source`).
_SOURCE_WORDS: dict[str, Callable[[dict[str, Any], str], str]] = {
    "synthetic": lambda data, sha256: (
        f"synthetic phantom {'volumes' if data.get('spatial_dims') == 3 else 'images'} generated from the seed"
    ),
    "medmnist": lambda data, sha256: f"the MedMNIST-format file {_file_name(data['path'])} (sha256 {sha256})",
    "files": _files_words,
}


def audit_scope(report: Report) -> list[str]:
    """What was audited, on what, by which software: the statements that head the section."""
    spec, env = report.spec, report.environment
    data = spec["data"]
    describe = _SOURCE_WORDS.get(data["source"], lambda data, sha256: f"{data['source']} data (sha256 {sha256})")
    source = describe(data, env.data_sha256)
    split = "each a hospital's own datalist" if data.get("site") else f"{data['partition']} partition"
    lines = [
        f"Audit {spec['name']!r}: {len(report.scenarios)} scenario(s) of {spec['federation']['strategy']} over "
        f"{data['sites']} sites ({split}), model {spec['model']['name']}, "
        f"{spec['federation']['rounds']} rounds, seed {env.seed}, on {source}.",
        f"Spec sha256 {env.spec_sha256}; fedsecure {env.fedsecure}, torch {env.torch}, device {env.device}.",
    ]
    if report.quick:
        lines.append(
            "QUICK RUN: fewer rounds, images and reference models than the spec asks for. "
            "These figures are a first look, not evidence; do not file this report."
        )
    if report.only:
        lines.append(f"Only these scenarios were run (--only): {', '.join(report.only)}. The others are not covered.")
    return lines


def scenario_compliance(report: Report) -> list[ScenarioCompliance]:
    """One statement per scenario of ``report``."""
    return [
        ScenarioCompliance(
            scenario=s.name,
            threat_model=_threat_model(s),
            trust=protocol_trust(s),
            leaves_site=_leaves_site(s),
            guarantee=_guarantee(s),
            leakage=_leakage(s),
            verdict=s.verdict.text,
            reasons=list(s.verdict.reasons),
            limits=_limits(report, s),
        )
        for s in report.scenarios
    ]


def _client_dp(scenario: ScenarioFinding) -> dict[str, Any] | None:
    dp = scenario.dp
    return dp if dp is not None and dp["level"] == "client" else None


def _threat_model(scenario: ScenarioFinding) -> list[tuple[str, str]]:
    dp, client_dp = scenario.dp, _client_dp(scenario)
    if scenario.masked:
        server = (
            "receives each site's update only under SecAgg+ masks it cannot remove alone, and learns their weighted "
            "sum (hence every global model), who took part and each sender's weight"
            + MASKED_SUM_NOISE.get(str(client_dp.get("placement")) if client_dp is not None else "", "")
        )
    elif scenario.encrypted:
        server = (
            "receives only CKKS ciphertexts of the sites' updates, holds no decryption key, and adds them without "
            "reading them; it learns which sites took part and the size of their messages, and receives the final "
            "model"
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
        + (" (the sites decrypt the encrypted sum together: they share the CKKS secret key, so a site that obtained "
           "another site's ciphertext could read it: the sites must not collude with the server)"
           if scenario.encrypted else "")
        + "; a site that subtracts its own update from the aggregate holds the other sites' sum, and with two "
        "sites the other site's update itself" + (", encryption notwithstanding" if scenario.encrypted else "")
    )
    return [
        ("aggregation server", server),
        ("other participating sites", sites),
        ("anyone given the released model", "sees the final global model only"),
    ]


def _leaves_site(scenario: ScenarioFinding) -> str:
    dp = scenario.dp
    what = f"a model update of {scenario.parameters:,} parameters each round" if scenario.parameters else (
        "a model update each round"
    )
    sites = max(1, max(len(r.participants) for r in scenario.rounds)) if scenario.rounds else 1
    size = bytes_text(scenario.cost.bytes_up_per_round / sites)
    form = FORM_WORDS.get(scenario.server_view, "in plaintext")
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


# What noise the SecAgg+ server's unmasked sum carries, by client-level DP's placement.
MASKED_SUM_NOISE = {
    "distributed": "; the noise in that sum is the sites' distributed shares",
    "central": ("; it reads the clipped sum before it adds the noise itself, so the client-level guarantee does not "
                "hold against it"),
}

FORM_WORDS = {
    "plaintext": "in plaintext",
    "ciphertext": "encrypted under CKKS",
    "masked": "quantized and masked under SecAgg+ (with its share of the masks' key material)",
}

EVALUATION_LEAVES = (
    "To pool the test AUC, each site also sends, after each round, per-class histograms of its test images' "
    "scores (bins 2^-10 wide in logit) with their labels and a confusion matrix (on Flower; in-process the "
    "auditor pools the same figure): no test image, and no score or label tied to an image, but the "
    "histograms give each test score to within its bin with the labels in that bin, so whoever holds one of a "
    "site's test images and the model can read that image's label."
)

def _guarantee(scenario: ScenarioFinding) -> list[str]:
    privacy, dp = scenario.privacy, scenario.dp
    if not privacy.differentially_private or dp is None:
        lines = ["No formal privacy guarantee: no differential privacy is applied."]
        if scenario.encrypted or scenario.masked:
            lines.append(
                "Secure aggregation hides each site's update from the server, but the global models and the released "
                "model are computed from the data without noise."
            )
        return lines
    lines = []
    if privacy.simulation:
        lines.append(
            "SIMULATION, NOT A GUARANTEE: the noise derives from the spec's seed printed in report.json "
            "(secure_rng = false); anyone who reads it can subtract the noise. The figures below are what the "
            "mechanism would give with secret noise."
        )
    headline = "unbounded" if privacy.epsilon is None else number(privacy.epsilon, 2)
    worst = privacy.worst_party
    delta = privacy.delta if privacy.delta is not None else math.nan
    if dp["level"] == "sample":
        lines += [
            f"({headline}, {delta:g})-differential privacy per training image at each site (the worst "
            "site's figure), against every party: each sees that site's DP-SGD output, or less, and the site's "
            "size, which is public.",
            "The unit of privacy is one image: a patient with k images in a site's data is protected at about k "
            "times epsilon (group privacy).",
        ]
    else:
        substitution = "" if privacy.epsilon is None else (
            f" Telling which of two datasets a hospital holds is bounded by twice that: epsilon "
            f"{number(2 * privacy.epsilon, 2)} at delta {(1 + math.exp(privacy.epsilon)) * delta:.3g} "
            "(group privacy)."
        )
        lines.append(
            f"Client-level differential privacy, per site: epsilon {headline} at delta {delta:g} against "
            f"the worst party ({PARTY_NAMES.get(worst or '', worst)}). It bounds what the models reveal about one "
            "hospital's training data, against the same run with that hospital's whole message replaced by zero "
            "(zero-out); which hospitals took part is not hidden, nor are the sizes and test-set metrics the "
            f"sites report.{substitution}"
        )
    for party, guarantee in (privacy.epsilon_by_adversary or {}).items():
        lines.append(guarantee.statement(party))
    rounds = privacy.rounds_completed
    lines.append(
        f"Accountant {privacy.accountant}: noise multiplier {number(privacy.noise_multiplier, 3)}, "
        f"sampling rate {number(privacy.sample_rate, 4)}, {privacy.steps} steps"
        + (f" over {rounds} rounds" if rounds is not None else "") + "."
    )
    if privacy.stopped_early:
        lines.append("Training stopped early: one more round would have exceeded the target epsilon.")
    lines += [f"Weakened: {warning}" for warning in privacy.warnings]
    return lines


def ceiling_below_epsilon(report: Report) -> list[str]:
    """For each DP scenario whose empirical audit could not have shown its accountant's epsilon, one line saying so."""
    return [f"{s.name}: {line}" for s in report.scenarios if (line := s.privacy.undetectable_overspend())]


def _leakage(scenario: ScenarioFinding) -> list[str]:
    lines = [attack.leakage_statement() for attack in scenario.attacks]
    canary = scenario.privacy.canary_audit
    if canary is not None:
        lines.append(canary.leakage_statement())
    mechanism = scenario.privacy.mechanism_audit
    if mechanism is not None:
        lines.append(mechanism.statement())
    if not lines:
        lines.append("Not measured: the spec runs no attacks against this scenario.")
    return lines


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _limits(report: Report, scenario: ScenarioFinding) -> list[str]:
    lines = [
        "Attacks show what at least leaks: a stronger attack than those run here may recover more. An empirical "
        "lower bound on epsilon is not a proof of privacy."
    ]
    if scenario.privacy.epsilon is None:
        lines.append("Without differential privacy nothing bounds what the models reveal beyond the attacks measured.")
    else:
        lines.append(
            "The formal guarantee holds if the implementation is correct and the noise is unpredictable to the "
            "adversary; it says nothing about information in the data that is not specific to one unit of privacy."
        )
    undetectable = scenario.privacy.undetectable_overspend()
    if undetectable:
        lines.append(_sentence(undetectable))
    mechanism = scenario.privacy.mechanism_audit
    if mechanism is not None:
        lines.append("The mechanism audit assumes: " + "; ".join(
            dict.fromkeys(a for check in mechanism.checks for a in check.assumptions)) + ".")
    lines.append(
        "The server is assumed honest but curious: it follows the protocol and only reads what it receives. A "
        "malicious server could choose who takes part, replay messages or forge an aggregate's weight (CKKS "
        "lets it encrypt values of its own); the sites check the study's spec, its site count, their own size "
        "and the weight total of every aggregate they decrypt, which catches a mistaken server, not a malicious one."
    )
    if scenario.encrypted:
        lines.append(
            "Encryption protects the updates from the server only if the server does not collude with a site: "
            "every site holds the same secret key, so a server colluding with one site reads every update. It "
            "does not protect the released model, nor the updates from the other sites (they see every aggregate)."
        )
    for kind in ATTACK_FINDINGS.values():
        lines += kind.limits([attack for attack in scenario.attacks if type(attack) is kind])
    data = report.spec["data"]
    lines.append(
        f"The figures hold for this data ({data['source']}, {data['sites']} sites) and these settings; another "
        "dataset, model or schedule needs its own audit."
    )
    if scenario.engine == "flower":
        lines.append(
            "The federation ran on Flower, one SuperNode per site. The pooled test AUC was computed from the "
            "sites' score histograms (see what leaves each site); it differs from the exact AUC only on pairs of "
            "test images from two sites whose scores share a bin."
        )
    for event in scenario.events:
        lines.append(f"During training: {event}.")
    if report.quick:
        lines.append("Quick run: reduced settings; not evidence.")
    return lines
