"""Running an audit: data -> baselines -> one federation per scenario -> report.json."""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from typing_extensions import override

from fedsecure.audit import records
from fedsecure.audit.engines import Engine, engine_named
from fedsecure.audit.environment import environment_manifest, package_versions
from fedsecure.audit.inversion import audit_inversion
from fedsecure.audit.mechanism import audit_mechanism
from fedsecure.audit.membership import audit_membership
from fedsecure.audit.run_directory import RunDirectory, RunIdentity
from fedsecure.audit.segmentation_examples import write_examples
from fedsecure.audit.study import run_study
from fedsecure.config.parts import build_parts_on
from fedsecure.config.quick import quick_spec
from fedsecure.config.spec import AuditSpec, LoadedSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.devices import resolve_device
from fedsecure.errors import OutputError, ReportFormatError, SpecError
from fedsecure.fl.baselines import baseline_training, train_centralized, train_local_only
from fedsecure.fl.federation import Federation
from fedsecure.fl.round_loop import FederationResult
from fedsecure.fl.state import ModelState
from fedsecure.fl.task import TASKS
from fedsecure.fl.views import Recipe, SeatViews, seat_views
from fedsecure.models import build_model, check_model_takes
from fedsecure.report.findings import (
    SCHEMA_VERSION,
    AttackFinding,
    Baselines,
    CanaryAuditFinding,
    CostFinding,
    MechanismAuditFinding,
    PrivacyFinding,
    Report,
    RoundFinding,
    ScenarioFinding,
    from_json,
    to_json,
)
from fedsecure.report.output import REPORT_JSON, write_json
from fedsecure.report.rendering import render_reports
from fedsecure.report.study_finding import StudyFinding
from fedsecure.report.verdict import judge
from fedsecure.secure.protocol import PROTOCOLS

Advance = Callable[[], None]
BASELINES = "baselines"
STUDY = "study"


class AuditProgress(Protocol):
    """Where the runner reports progress (the CLI shows rich progress bars).

    Work is counted in units of about one federated round of training, so
    that the whole audit's time left can be estimated from its pace so far.
    """

    def plan(self, units: float) -> None:
        """The audit's whole pending work, in units; called once, before any task."""
        ...

    def task(self, description: str, total: int, units_per_step: float = 1.0) -> AbstractContextManager[Advance]:
        """A context for one stage of ``total`` steps; yields the function that marks a step done."""
        ...


class SilentProgress(AuditProgress):
    """Progress reporting that reports nothing (library use, tests)."""

    @override
    def plan(self, units: float) -> None:
        pass

    @override
    def task(self, description: str, total: int, units_per_step: float = 1.0) -> AbstractContextManager[Advance]:
        return nullcontext(lambda: None)


def run_audit(
    loaded: LoadedSpec,
    out_dir: Path,
    device: str = "auto",
    progress: AuditProgress | None = None,
    resume: bool = False,
    quick: bool = False,
    only: Sequence[str] | None = None,
    engine: str = "in-process",
    force: bool = False,
) -> dict[str, Any]:
    """Run every scenario of a validated spec and write report.json, report.md and report.html.

    Each finished stage (the baselines, each scenario with its attacks) is kept
    in ``out_dir/stages`` as soon as it is done; with ``resume`` an interrupted
    run continues from there, and its report equals an uninterrupted run's
    (timings aside).

    Args:
        loaded: the validated spec and its text.
        out_dir: where the report goes; refused if it holds another spec's results, or
            this spec's without ``resume``.
        device: "auto", "cpu" or "cuda".
        progress: where to report progress.
        resume: continue the run whose stages ``out_dir`` holds.
        quick: run the spec's quick version (fewer rounds, images and reference
            models: a first look, not evidence).
        only: run and report only these scenarios (all when None).
        engine: what runs each scenario's federation: "in-process", or "flower"
            (Flower's simulation engine, one SuperNode per site; needs
            ``fedsecure[flower]``). Baselines and attacks run in-process either way.
        force: replace the earlier fedsecure run ``out_dir`` holds (never anything else).

    Returns:
        The report, as written to ``out_dir/report.json``.

    Raises:
        FedsecureError: bad data, an unusable device or output directory, an unknown scenario.
    """
    progress = progress or SilentProgress()
    spec = quick_spec(loaded.spec) if quick else loaded.spec
    scenarios = _selected(spec, only)
    runner = engine_named(engine, spec, scenarios)
    torch_device = resolve_device(device)
    identity = RunIdentity(
        spec.name, loaded.sha256, quick, str(torch_device), package_versions()["fedsecure"], engine
    )
    run = RunDirectory(out_dir, identity, resume, force)
    started = time.perf_counter()

    with progress.task("preparing data", 1, units_per_step=0) as advance:
        data = spec.data.federated(spec.seed)
        advance()
    make_model = partial(build_model, spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
    task = TASKS.get(spec.data.task)
    task.check_outputs(  # before anything is written
        check_model_takes(make_model(), data.in_channels, data.image_size), data.n_classes, data.image_size,
        spec.model.name,
    )
    _check_dp_scenarios(spec, scenarios, data, torch_device)
    prepare_seconds = time.perf_counter() - started
    run.begin()

    kept_baselines = run.load(BASELINES)
    finished = {s.name: run.load(_stage(s)) for s in scenarios}
    pending = sum(finding is None for finding in finished.values())
    progress.plan((kept_baselines is None) * 2 * spec.federation.rounds + pending * _scenario_units(spec))
    if kept_baselines is None:
        kept_baselines = to_json(_run_baselines(spec, data, make_model, torch_device, progress))
        run.save(BASELINES, kept_baselines)
    # The report is assembled from the stages as written to disk (read back as findings), so that a resumed
    # run's report is an uninterrupted run's.
    baselines = _stage_finding(run, BASELINES, Baselines, kept_baselines)
    findings = []
    for scenario in scenarios:
        kept = finished[scenario.name]
        if kept is None:
            kept = _run_scenario(
                runner, engine, spec, scenario, data, make_model, torch_device, progress, out_dir
            ).to_json()
            run.save(_stage(scenario), kept)
        findings.append(_stage_finding(run, _stage(scenario), ScenarioFinding, kept))

    study = None
    if spec.study is not None and not only:
        kept_study = run.load(STUDY)
        if kept_study is None:
            steps = spec.study.seeds * len(spec.study.methods)
            with progress.task("study: methods x seeds", steps, units_per_step=0) as advance:
                kept_study = to_json(run_study(spec, data, torch_device, on_step=lambda _: advance()))
            run.save(STUDY, kept_study)
        study = _stage_finding(run, STUDY, StudyFinding, kept_study)

    report = Report(
        schema_version=SCHEMA_VERSION,
        spec={"origin": loaded.origin, **spec.model_dump(mode="json")},
        quick=quick,
        only=[s.name for s in scenarios] if only else None,
        environment=environment_manifest(torch_device, spec.seed, loaded.sha256, data.sha256()),
        baselines=baselines,
        scenarios=findings,
        # Compute time of the whole audit, summed over its stages (also across a resume).
        wall_seconds=prepare_seconds + baselines.train_seconds + sum(f.wall_seconds for f in findings)
        + (study.wall_seconds if study is not None else 0.0),
        metric=task.metric,
        study=study,
    )
    written = report.to_json()
    write_json(out_dir / REPORT_JSON, written)
    render_reports(report, out_dir)
    return written


T = TypeVar("T")


def _stage_finding(run: RunDirectory, stage: str, kind: type[T], kept: dict[str, Any]) -> T:
    """A stage as written to disk, read back as its finding."""
    try:
        return from_json(kind, kept, stage)
    except ReportFormatError as exc:
        raise OutputError(
            f"{run.stages / stage}.json: not a stage this fedsecure can read ({exc}); delete it to run that stage again"
        ) from None


def _check_dp_scenarios(
    spec: AuditSpec, scenarios: list[ScenarioSpec], data: FederatedData, device: torch.device
) -> None:
    """Build and calibrate every DP scenario as its run will, before any training.

    A model DP-SGD cannot train, or a budget no noise can keep, would otherwise
    fail after the baselines and the scenarios before it (hours, on real data).

    Raises:
        NotSupportedError: DP-SGD cannot train the model.
        SpecError: naming the scenario whose epsilon and delta cannot be met.
    """
    for scenario in scenarios:
        if scenario.dp is None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the scenario warns about its settings (and replaced layers) when it runs
            try:
                parts = build_parts_on(spec, scenario, data, device)
                for site in data.sites:  # DP-SGD calibrates per site, for its number of images
                    parts.privacy.pin_noise_to_site(
                        site.n_train, parts.training, spec.federation.rounds, parts.strategy.one_full_batch_step
                    )
            except SpecError as exc:
                raise SpecError(f"scenario {scenario.name}: {exc}") from None


def _stage(scenario: ScenarioSpec) -> str:
    return f"scenario-{scenario.name}"


def _selected(spec: AuditSpec, only: Sequence[str] | None) -> list[ScenarioSpec]:
    if not only:
        return list(spec.scenario)
    for name in only:
        try:
            spec.scenario_named(name)
        except SpecError as exc:
            raise SpecError(f"--only {name}: {exc}") from None
    return [s for s in spec.scenario if s.name in only]


def _scenario_units(spec: AuditSpec) -> float:
    """A scenario's work in rounds of training: its own federation and its attacks' federations."""
    rounds = spec.federation.rounds
    units = rounds
    if spec.attacks.inversion is not None:
        # Per seat, the probes' training plus the optimisation is of the order of one federation.
        units += rounds * len(spec.attacks.inversion.positions_on(spec.data.sites))
    membership = spec.attacks.membership
    if membership is not None:
        units += rounds * (membership.shadow_models + (membership.canaries > 0))
    if spec.attacks.mechanism is not None:
        units += 1 + rounds * (spec.attacks.mechanism.canary_clients > 0)  # the pipeline runs; canary clients' run
    return units


def _run_baselines(
    spec: AuditSpec,
    data: FederatedData,
    make_model: Callable[[], torch.nn.Module],
    device: torch.device,
    progress: AuditProgress,
) -> Baselines:
    budget = baseline_training(spec.federation.local_training(spec.data.task), spec.federation.rounds)
    rounds = spec.federation.rounds
    with progress.task("baseline: centralized", 1, units_per_step=rounds) as advance:
        centralized = train_centralized(data, make_model, budget, spec.seed, device)
        advance()
    with progress.task("baseline: local-only", len(data.sites), units_per_step=rounds / len(data.sites)) as advance:
        local_only = train_local_only(data, make_model, budget, spec.seed, device, on_site=lambda _: advance())
    return records.baselines(centralized, local_only)


def _run_scenario(
    runner: Engine,
    engine: str,
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
            training=scenario.local_training(spec.federation, spec.data.task),
            rounds=spec.federation.rounds,
            protocol=scenario.protocol_instance(),
            clients_per_round=spec.federation.clients_per_round,
            seed=spec.seed,
            device=device,
            privacy=scenario.dp.mechanism() if scenario.dp is not None else None,
            # The server seat's membership attack reads each site's last local model, its inversion the first round.
            keep_messages="ends",
        )
        return Federation(on, make_model(), spec.federation.strategy_instance(), **{**settings, **overrides})

    started = time.perf_counter()
    with progress.task(f"scenario {scenario.name}: rounds ({engine})", spec.federation.rounds) as advance:
        result = runner.run(spec, scenario, data, build_federation, on_round=lambda _: advance())
    wall = time.perf_counter() - started
    examples = write_examples(TASKS.get(spec.data.task), result.released_model, data, out_dir, scenario.name, device)
    rounds = spec.federation.rounds
    attacks: list[AttackFinding] = []
    canary = None
    attacks_started = time.perf_counter()
    mechanism = None
    if spec.attacks.mechanism is not None and scenario.dp is not None:
        with progress.task(f"scenario {scenario.name}: mechanism audit", 1, units_per_step=1) as advance:
            mechanism = audit_mechanism(spec, scenario, data, build_federation)
            advance()
    inversion = spec.attacks.inversion
    if inversion is not None:
        seats = len(inversion.positions_on(spec.data.sites))
        with progress.task(f"scenario {scenario.name}: inversion attack", 1, units_per_step=rounds * seats) as advance:
            start = next((r.global_model for r in result.trace.rounds if r.round == inversion.round), None)
            attacks.extend(audit_inversion(spec, scenario, data, build_federation, out_dir, start=start))
            advance()
    if spec.attacks.membership is not None:
        membership = spec.attacks.membership
        with progress.task(
            f"scenario {scenario.name}: membership (reference federations)",
            membership.shadow_models + (membership.canaries > 0), units_per_step=rounds,
        ) as advance:
            found, canary = audit_membership(
                spec, scenario, data, build_federation, _seats(spec, scenario, result, data, membership.attacker_site),
                device, out_dir / "cache",
                on_reference=lambda _: advance(),
            )
        attacks.extend(found)
    attack_seconds = time.perf_counter() - attacks_started
    return scenario_finding(
        spec, scenario, result, wall_seconds=wall, attacks=attacks, canary=canary, attack_seconds=attack_seconds,
        mechanism=mechanism, examples=examples,
    )


def _seats(
    spec: AuditSpec, scenario: ScenarioSpec, result: FederationResult, data: FederatedData, attacker_site: int
) -> SeatViews:
    """Every seat's view of the scenario's federation, built from its result (whichever engine ran it)."""
    model = copy.deepcopy(result.released_model)
    strategy = spec.federation.strategy_instance()
    state = ModelState(model, private=strategy.private_names(model))
    recipe = Recipe(scenario.local_training(spec.federation, spec.data.task), strategy.one_full_batch_step)
    return seat_views(result, state, recipe, state.get_private(), data.sites[attacker_site].name)


def scenario_finding(
    spec: AuditSpec, scenario: ScenarioSpec, result: FederationResult, *, wall_seconds: float,
    attacks: list[AttackFinding], canary: CanaryAuditFinding | None, attack_seconds: float,
    mechanism: MechanismAuditFinding | None = None, examples: str | None = None,
) -> ScenarioFinding:
    """One scenario's finding from its federation's result and its attacks (whatever engine ran it).

    ``examples``: the figure of example segmentations, relative to the report (segmentation only).
    """
    privacy = _privacy(result, attacks, canary, mechanism)
    return ScenarioFinding(
        name=scenario.name,
        protocol=scenario.protocol,
        dp=scenario.dp.model_dump(mode="json") if scenario.dp is not None else None,
        strategy=spec.federation.strategy,
        utility=records.utility_finding(result.evaluation.global_, result.evaluation.per_site, examples),
        privacy=privacy,
        cost=_cost(result, wall_seconds),
        protocol_parameters=result.protocol_parameters,
        server_view=_server_view(result),
        attacks=attacks,
        rounds=_rounds(result),
        verdict=judge(spec.thresholds, privacy, attacks),
        attack_seconds=attack_seconds,
        parameters=result.trace.update_length,
        engine=result.trace.engine,
        events=list(result.trace.events),
        transport=result.trace.transport,
    )


def write_finding(path: Path, finding: ScenarioFinding) -> None:
    """Write one scenario's finding as JSON (the shape a run directory's stages hold)."""
    write_json(path, to_json(finding))


def _privacy(
    result: FederationResult, attacks: list[AttackFinding], canary: CanaryAuditFinding | None,
    mechanism: MechanismAuditFinding | None,
) -> PrivacyFinding:
    # One pre-registered empirical bound: the canary audit's (its membership was randomised). The
    # membership attacks' rates on real training data are leakage, not epsilon bounds.
    empirical = canary.epsilon_lb if canary is not None else None
    ceiling = canary.epsilon_ceiling if canary is not None else (0.0 if attacks else None)
    evidence = dict(
        empirical_epsilon_lb=empirical, canary_audit=canary, empirical_epsilon_ceiling=ceiling,
        empirical_confidence=canary.confidence if canary is not None else None, mechanism_audit=mechanism,
    )
    guarantee = result.trace.privacy
    if guarantee is None:
        return PrivacyFinding(**evidence)
    return PrivacyFinding(
        **evidence,
        guarantee=f"{guarantee.level}-level DP", unit=guarantee.unit, epsilon=guarantee.epsilon, delta=guarantee.delta,
        noise_multiplier=guarantee.noise_multiplier, sample_rate=guarantee.sample_rate, steps=guarantee.steps,
        accountant=guarantee.accountant, target_epsilon=guarantee.target_epsilon, secure_rng=guarantee.secure_rng,
        stopped_early=guarantee.stopped_early, rounds_completed=guarantee.rounds_completed,
        warnings=guarantee.notes, per_site=guarantee.per_site, clip_per_round=guarantee.clip_per_round,
        epsilon_by_adversary=records.party_guarantees(guarantee.by_adversary),
        worst_party=guarantee.worst_party, mechanism=guarantee.mechanism, simulation=guarantee.simulation,
        protected_units=guarantee.protected_units,
    )


def _server_view(result: FederationResult) -> str:
    received = [m for r in result.trace.rounds if r.received for m in r.received.values()]
    return "plaintext" if any(m.plaintext for m in received) else PROTOCOLS.get(result.trace.protocol).message_form


def _cost(result: FederationResult, wall_seconds: float) -> CostFinding:
    return CostFinding(wall_seconds=wall_seconds, **dataclasses.asdict(result.cost))


def _rounds(result: FederationResult) -> list[RoundFinding]:
    return [
        RoundFinding(
            round=r.round,
            participants=[c.site for c in r.clients],
            epsilon=r.epsilon,
            auc=r.utility.auc if r.utility else None,
            accuracy=r.utility.accuracy if r.utility else None,
            dice=r.utility.dice if r.utility else None,
            train_seconds=r.train_seconds,
            protect_seconds=r.protect_seconds,
            bytes_up=r.bytes_up,
            bytes_down=r.bytes_down,
        )
        for r in result.trace.rounds
    ]
