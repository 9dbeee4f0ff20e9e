"""Running an audit: data -> baselines -> one federation per scenario -> report.json."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch

from fedsecure.audit.environment import environment_manifest
from fedsecure.audit.findings import (
    SCHEMA_VERSION,
    CanaryAuditFinding,
    CostFinding,
    InversionFinding,
    LocalOnlyFinding,
    MembershipFinding,
    PrivacyFinding,
    RoundFinding,
    ScenarioFinding,
    UtilityFinding,
    to_json,
)
from fedsecure.audit.inversion import audit_inversion
from fedsecure.audit.membership import audit_membership
from fedsecure.audit.markdown import render_markdown
from fedsecure.audit.output import REPORT_JSON, check_output_dir, write_atomic, write_json
from fedsecure.audit.spec import AuditSpec, LoadedSpec, ScenarioSpec
from fedsecure.audit.verdict import judge
from fedsecure.data.federated import FederatedData, federate
from fedsecure.devices import resolve_device
from fedsecure.fl.baselines import baseline_training, train_centralized, train_local_only
from fedsecure.fl.federation import Federation, FederationResult
from fedsecure.models import build_model

Advance = Callable[[], None]


class AuditProgress(Protocol):
    """Where the runner reports progress (the CLI shows rich progress bars)."""

    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:
        """A context for one stage of ``total`` steps; yields the function that marks a step done."""
        ...


class SilentProgress:
    """Progress reporting that reports nothing (library use, tests)."""

    def task(self, description: str, total: int) -> AbstractContextManager[Advance]:  # noqa: D102
        return nullcontext(lambda: None)


def run_audit(
    loaded: LoadedSpec,
    out_dir: Path,
    device: str = "auto",
    progress: AuditProgress | None = None,
) -> dict[str, Any]:
    """Run every scenario of a validated spec and write ``report.json`` and ``report.md``.

    Args:
        loaded: the validated spec and its text.
        out_dir: where the report goes; refused if it holds another spec's results.
        device: "auto", "cpu" or "cuda".
        progress: where to report progress.

    Returns:
        The report, as written to ``out_dir/report.json``.

    Raises:
        FedsecureError: bad data, an unusable device or output directory.
    """
    progress = progress or SilentProgress()
    check_output_dir(out_dir, loaded.sha256)
    spec = loaded.spec
    torch_device = resolve_device(device)
    started = time.perf_counter()

    with progress.task("preparing data", 1) as advance:
        data = federate(spec.data.source_instance(spec.seed), spec.data.sites, spec.data.partitioner(), spec.seed)
        advance()
    make_model = partial(build_model, spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
    budget = baseline_training(spec.federation.local_training(), spec.federation.rounds)

    with progress.task("baseline: centralized", 1) as advance:
        centralized = train_centralized(data, make_model, budget, spec.seed, torch_device)
        advance()
    with progress.task("baseline: local-only", len(data.sites)) as advance:
        local_only = train_local_only(data, make_model, budget, spec.seed, torch_device, on_site=lambda _: advance())

    scenarios = [
        _run_scenario(spec, scenario, data, make_model, torch_device, progress, out_dir) for scenario in spec.scenario
    ]
    report = {
        "schema_version": SCHEMA_VERSION,
        "spec": {"origin": loaded.origin, **spec.model_dump(mode="json")},
        "environment": environment_manifest(torch_device, spec.seed, loaded.sha256, data.sha256()),
        "baselines": {
            "centralized": {
                **to_json(UtilityFinding(centralized.utility.auc, centralized.utility.accuracy, centralized.per_site)),
                "train_seconds": centralized.train_seconds,
            },
            "local_only": {
                **to_json(
                    LocalOnlyFinding(
                        local_only.auc, local_only.accuracy, local_only.per_site,
                        per_site_on_test=[
                            {"site": s.site, "auc": u.auc, "accuracy": u.accuracy}
                            for s, u in zip(local_only.per_site, local_only.per_site_on_test)
                        ],
                    )
                ),
                "train_seconds": local_only.train_seconds,
            },
        },
        "scenarios": [to_json(s) for s in scenarios],
        "wall_seconds": time.perf_counter() - started,
    }
    write_json(out_dir / REPORT_JSON, report)
    write_atomic(out_dir / "report.md", render_markdown(report))
    return report


def _run_scenario(
    spec: AuditSpec,
    scenario: ScenarioSpec,
    data: FederatedData,
    make_model: Callable[[], torch.nn.Module],
    device: torch.device,
    progress: AuditProgress,
    out_dir: Path,
) -> ScenarioFinding:
    def build_federation(on: FederatedData, **overrides: Any) -> Federation:
        settings = dict(
            training=scenario.local_training(spec.federation),
            rounds=spec.federation.rounds,
            protocol=scenario.protocol_instance(),
            clients_per_round=spec.federation.clients_per_round,
            seed=spec.seed,
            device=device,
            privacy=scenario.dp.mechanism() if scenario.dp is not None else None,
        )
        return Federation(on, make_model(), spec.federation.strategy_instance(), **{**settings, **overrides})

    federation = build_federation(data)
    started = time.perf_counter()
    with progress.task(f"scenario {scenario.name}: rounds", spec.federation.rounds) as advance:
        result = federation.run(on_round=lambda _: advance())
    wall = time.perf_counter() - started
    attacks: list[InversionFinding | MembershipFinding] = []
    canary = None
    if spec.attacks.inversion is not None:
        with progress.task(f"scenario {scenario.name}: inversion attack", 1) as advance:
            attacks.append(audit_inversion(spec, scenario, data, build_federation, out_dir))
            advance()
    if spec.attacks.membership is not None:
        federation.state.set(result.trace.final_global.to(device))
        with progress.task(f"scenario {scenario.name}: reference models", spec.attacks.membership.shadow_models) as advance:
            found, canary = audit_membership(
                spec, scenario, data, build_federation, federation.model, device, out_dir / "cache",
                on_reference=lambda _: advance(),
            )
        attacks.extend(found)
    privacy = _privacy(result, attacks, canary)
    return ScenarioFinding(
        name=scenario.name,
        protocol=scenario.protocol,
        dp=scenario.dp.model_dump(mode="json") if scenario.dp is not None else None,
        strategy=spec.federation.strategy,
        utility=UtilityFinding(
            result.evaluation.global_.auc, result.evaluation.global_.accuracy, result.evaluation.per_site
        ),
        privacy=privacy,
        cost=_cost(result, wall),
        protocol_parameters=federation.protocol.describe(),
        server_view=_server_view(result),
        attacks=attacks,
        rounds=_rounds(result),
        verdict=judge(spec.thresholds, privacy, attacks),
    )


def _privacy(
    result: FederationResult, attacks: list[InversionFinding | MembershipFinding], canary: CanaryAuditFinding | None
) -> PrivacyFinding:
    # The empirical lower bound is the strongest one measured: the canary audit's, or an attack's.
    bounds = [a.epsilon_lb for a in attacks if isinstance(a, MembershipFinding) and a.epsilon_lb is not None]
    bounds += [canary.epsilon_lb] if canary is not None else []
    empirical = max(bounds) if bounds else None
    guarantee = result.trace.privacy
    if guarantee is None:
        return PrivacyFinding(empirical_epsilon_lb=empirical, canary_audit=canary)
    return PrivacyFinding(
        empirical_epsilon_lb=empirical, canary_audit=canary,
        guarantee=f"{guarantee.level}-level DP", unit=guarantee.unit, epsilon=guarantee.epsilon, delta=guarantee.delta,
        noise_multiplier=guarantee.noise_multiplier, sample_rate=guarantee.sample_rate, steps=guarantee.steps,
        accountant=guarantee.accountant, target_epsilon=guarantee.target_epsilon, secure_rng=guarantee.secure_rng,
        stopped_early=guarantee.stopped_early, rounds_completed=guarantee.rounds_completed,
        warnings=guarantee.notes, per_site=guarantee.per_site, clip_per_round=guarantee.clip_per_round,
    )


def _server_view(result: FederationResult) -> str:
    received = [m for r in result.trace.rounds if r.received for m in r.received.values()]
    return "plaintext" if any(m.plaintext for m in received) else "ciphertext"


def _cost(result: FederationResult, wall_seconds: float) -> CostFinding:
    trace = result.trace
    return CostFinding(
        train_seconds=trace.train_seconds,
        protect_seconds=trace.protect_seconds,
        bytes_up_per_round=trace.bytes_up_per_round,
        bytes_down_per_round=trace.bytes_down_per_round,
        wall_seconds=wall_seconds,
        encrypt_seconds=trace.encrypt_seconds,
        aggregate_seconds=trace.aggregate_seconds,
        decrypt_seconds=trace.decrypt_seconds,
        setup_bytes=trace.setup_bytes,
        bytes_per_parameter=trace.bytes_per_parameter,
    )


def _rounds(result: FederationResult) -> list[RoundFinding]:
    return [
        RoundFinding(
            round=r.round,
            participants=[c.site for c in r.clients],
            epsilon=r.epsilon,
            auc=r.utility.auc if r.utility else None,
            accuracy=r.utility.accuracy if r.utility else None,
            train_seconds=r.train_seconds,
            protect_seconds=r.protect_seconds,
            bytes_up=r.bytes_up,
            bytes_down=r.bytes_down,
        )
        for r in result.trace.rounds
    ]
