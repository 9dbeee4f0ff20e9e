"""report.md: the summary table and verdicts, rendered from report.json alone."""

from __future__ import annotations

from typing import Any


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}"


def _rate(attack: dict[str, Any], level: str) -> str:
    rate = attack["tpr_at_fpr"].get(level)
    if rate is None:
        return "n/a"
    text = f"{rate['tpr']:.3f} [{rate['low']:.3f}, {rate['high']:.3f}]"
    return text if rate["resolved"] else f"{text} (at 0 false positives: too few non-members)"


def _bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _verdict(verdict: dict[str, Any]) -> str:
    return {True: "PASS", False: "FAIL", None: "not judged"}[verdict["pass"]]


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown summary of a report (for a pull request or a ticket)."""
    spec, env, baselines = report["spec"], report["environment"], report["baselines"]
    lines = [
        f"# fedsecure audit: {spec['name']}",
        "",
        f"{len(report['scenarios'])} scenario(s); data `{spec['data']['source']}` over {spec['data']['sites']} sites "
        f"({spec['data']['partition']} partition); model `{spec['model']['name']}`; "
        f"{spec['federation']['strategy']}, {spec['federation']['rounds']} rounds; seed {env['seed']}; "
        f"device {env['device']}; fedsecure {env['fedsecure']}, torch {env['torch']}.",
        "",
        "| scenario | protocol | AUC | accuracy | epsilon | train s | protect s | up / round | down / round | bytes / parameter | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in report["scenarios"]:
        epsilon = s["privacy"]["epsilon"]
        lines.append(
            f"| {s['name']} | {s['protocol']} | {_number(s['utility']['auc'])} | {_number(s['utility']['accuracy'])} "
            f"| {'none (no DP)' if epsilon is None else _number(epsilon, 2)} "
            f"| {_number(s['cost']['train_seconds'], 1)} | {_number(s['cost']['protect_seconds'], 2)} "
            f"| {_bytes(s['cost']['bytes_up_per_round'])} | {_bytes(s['cost']['bytes_down_per_round'])} "
            f"| {_number(s['cost']['bytes_per_parameter'], 1)} | {_verdict(s['verdict'])} |"
        )
    central, local = baselines["centralized"], baselines["local_only"]
    lines += [
        "",
        "Baselines, same budget of passes over the data:",
        "",
        f"- centralized (all data pooled, the upper bound): AUC {_number(central['auc'])}, accuracy {_number(central['accuracy'])}",
        f"- local-only (each site alone, mean over sites on the whole test set): AUC {_number(local['auc'])}, "
        f"accuracy {_number(local['accuracy'])}",
    ]
    protected = [s for s in report["scenarios"] if s["server_view"] == "ciphertext"]
    if protected:
        lines += ["", "Protection:", ""]
    for s in protected:
        cost, params = s["cost"], s["protocol_parameters"]
        lines.append(
            f"- **{s['name']}** ({params['name']}{', preset ' + params['preset'] if params.get('preset') else ''}): "
            f"encrypt {_number(cost['encrypt_seconds'], 2)} s, aggregate {_number(cost['aggregate_seconds'], 2)} s, "
            f"decrypt {_number(cost['decrypt_seconds'], 2)} s over the run; the server held only ciphertext."
        )
    inversions = [(s["name"], a) for s in report["scenarios"] for a in s["attacks"] if a["attack"] == "inversion"]
    if inversions:
        lines += [
            "",
            "Gradient inversion, judged against the attacker's prior image (the mean public image):",
            "",
            "| scenario | attack | position | status | median PSNR | prior PSNR | gain | median SSIM | prior SSIM | labels |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    for name, a in inversions:
        lines.append(
            f"| {name} | {a['method']} | {a['position']} | {a['status']} | {_number(a['psnr_median'], 1)} "
            f"| {_number(a['prior_psnr_median'], 1)} | {_signed(a['psnr_gain_median'])} | {_number(a['ssim_median'])} "
            f"| {_number(a['prior_ssim_median'])} | {_number(a['label_accuracy'], 2)} |"
        )
    memberships = [(s, a) for s in report["scenarios"] for a in s["attacks"] if a["attack"] == "membership"]
    if memberships:
        lines += [
            "",
            "Membership inference on the released model (TPR at a fixed FPR, with its "
            f"{_number(memberships[0][1]['confidence'], 2)} Clopper-Pearson interval):",
            "",
            "| scenario | attack | position | AUC | TPR at 1% FPR | TPR at 0.1% FPR | advantage | epsilon (accountant) | empirical epsilon lower bound |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    for s, a in memberships:
        lines.append(
            f"| {s['name']} | {a['method']} | {a['position']} | {_number(a['auc'])} | {_rate(a, '0.01')} "
            f"| {_rate(a, '0.001')} | {_number(a['advantage'])} | {_number(s['privacy']['epsilon'], 2)} "
            f"| {_number(a['epsilon_lb'], 2)} |"
        )
    canaries = [(s["name"], s["privacy"]["canary_audit"]) for s in report["scenarios"] if s["privacy"].get("canary_audit")]
    if canaries:
        lines += ["", "One-run canary audits (Steinke, Nasr and Jagielski 2023):", ""]
    for name, c in canaries:
        lines.append(
            f"- **{name}**: {c['correct']} of {c['guesses']} guesses right on {c['canaries']} canaries "
            f"({c['included']} inserted): epsilon >= {_number(c['epsilon_lb'], 2)} at {_number(c['confidence'], 2)} "
            f"confidence (delta {c['delta']:g})"
        )
    lines += ["", "## Verdicts", ""]
    for s in report["scenarios"]:
        lines.append(f"- **{s['name']}**: {_verdict(s['verdict'])}")
        lines += [f"  - {reason}" for reason in s["verdict"]["reasons"]]
    lines += ["", f"spec sha256 `{env['spec_sha256']}`, data sha256 `{env['data_sha256']}`.", ""]
    return "\n".join(lines)
