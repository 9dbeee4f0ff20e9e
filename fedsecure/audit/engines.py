"""What runs a scenario's federation, chosen by name (``fedsecure audit --engine``).

Every engine returns the same :class:`~fedsecure.fl.round_loop.FederationResult`
(trace, released model, utility, cost) from the same round loop, so the
audit's views, attacks and report do not depend on which engine ran. Baselines
and attacks run in-process either way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from typing_extensions import override

from fedsecure.config.spec import AuditSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.errors import SpecError, UnknownNameError
from fedsecure.fl.federation import Federation
from fedsecure.fl.round_loop import FederationResult
from fedsecure.fl.trace import RoundRecord
from fedsecure.registry import Registry

BuildFederation = Callable[..., Federation]
OnRound = Callable[[RoundRecord], None]


class Engine(ABC):
    """Runs one scenario's federation."""

    def check(self, spec: AuditSpec, scenarios: Sequence[ScenarioSpec]) -> None:
        """Refuse, before any training, what this engine cannot run of ``spec`` (raises a FedsecureError).

        The default accepts every scenario; an engine with limits overrides it.
        """
        return None

    @abstractmethod
    def run(
        self, spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, build_federation: BuildFederation,
        on_round: OnRound,
    ) -> FederationResult:
        """Run ``scenario``'s federation on ``data``.

        Args:
            spec: the spec as it runs (after ``--quick``).
            scenario: the scenario to run.
            data: the federated data.
            build_federation: the scenario's in-process federation on given data.
            on_round: called with each finished round's record.
        """


ENGINES: Registry[type[Engine]] = Registry("engine")


@ENGINES.register("in-process")
class InProcessEngine(Engine):
    """Every site in this process, one after the other."""

    @override
    def run(
        self, spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, build_federation: BuildFederation,
        on_round: OnRound,
    ) -> FederationResult:
        return build_federation(data).run(on_round=on_round)


@ENGINES.register("flower")
class FlowerSimulationEngine(Engine):
    """Flower's simulation engine: one virtual SuperNode per site, the deployment's ClientApp and ServerApp."""

    @override
    def check(self, spec: AuditSpec, scenarios: Sequence[ScenarioSpec]) -> None:
        try:
            from fedsecure.flower.federation import check_runs_on_flower  # the optional extra
        except ImportError:
            raise SpecError("--engine flower needs Flower: pip install 'fedsecure[flower]'") from None
        for scenario in scenarios:
            check_runs_on_flower(spec, scenario)

    @override
    def run(
        self, spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, build_federation: BuildFederation,
        on_round: OnRound,
    ) -> FederationResult:
        from fedsecure.flower.simulation import run_in_simulation

        return run_in_simulation(spec, scenario, data, on_round=on_round)


def engine_named(name: str, spec: AuditSpec, scenarios: Sequence[ScenarioSpec]) -> Engine:
    """The engine ``name``, checked against ``spec``'s ``scenarios``.

    Raises:
        SpecError: unknown engine, or one that cannot run a scenario.
    """
    try:
        engine = ENGINES.get(name)()
    except UnknownNameError as exc:
        raise SpecError(f"--engine {name}: {exc.args[0]}") from None
    engine.check(spec, scenarios)
    return engine
