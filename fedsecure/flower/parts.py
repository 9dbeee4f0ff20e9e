"""What the sites and the server of a Flower federation each build from the spec, the same way.

Every party rebuilds the scenario's model, strategy, privacy mechanism and
protocol from the spec it was sent, and calibrates the mechanism from the same
federation facts, so that a site's noise and the server's accounting agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsecure.audit.spec import AuditSpec, ScenarioSpec
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import Strategy
from fedsecure.fl.training import LocalTraining
from fedsecure.models import build_model
from fedsecure.privacy.mechanism import FederationFacts, PrivacyMechanism
from fedsecure.secure.protocol import AggregationProtocol

SHAPE_KEYS = ("in_channels", "n_classes", "height", "width")
"""The model's input and output shape, as the server tells the sites (the sites' data decide it)."""


@dataclass
class ScenarioParts:
    """One party's copy of a scenario's objects, calibrated."""

    state: ModelState
    strategy: Strategy
    privacy: PrivacyMechanism
    protocol: AggregationProtocol
    training: LocalTraining


def build_parts(
    spec: AuditSpec, scenario: ScenarioSpec, shape: dict[str, int], site_sizes: list[int], device: torch.device
) -> ScenarioParts:
    """The scenario's model (from the spec's seed), strategy, calibrated privacy mechanism and protocol.

    Args:
        spec: the audit spec.
        scenario: the scenario run.
        shape: ``SHAPE_KEYS`` to their values.
        site_sizes: every site's training images, in site order.
        device: where the model lives.
    """
    model = build_model(spec.model.name, int(shape["in_channels"]), int(shape["n_classes"]),
                        (int(shape["height"]), int(shape["width"])), spec.seed)
    privacy = scenario.dp.mechanism() if scenario.dp is not None else PrivacyMechanism()
    model = privacy.prepare_model(model).to(device)
    strategy = spec.federation.strategy_instance()
    protocol = scenario.protocol_instance()
    training = scenario.local_training(spec.federation)
    private = strategy.private_names(model)
    privacy.calibrate(FederationFacts(
        site_sizes=[int(n) for n in site_sizes], rounds=spec.federation.rounds, training=training,
        clients_per_round=spec.federation.clients_per_round, seed=spec.seed, device=device,
        private_names=frozenset(private), updates_hidden=protocol.hides_updates,
    ))
    return ScenarioParts(ModelState(model, private=private), strategy, privacy, protocol, training)


def reveal_quorum(privacy: PrivacyMechanism, protocol: AggregationProtocol, n_sites: int) -> int:
    """The fewest sites' messages an aggregate must hold for the sites to reveal it.

    The privacy mechanism's quorum (distributed noise is calibrated for ``min_sites``
    shares), and at least 2 under secure aggregation when the federation has 2 or more
    sites: every site decrypts what the server sends back, and the server sees the result
    in the next global model, so were the "aggregate" one site's ciphertext, that site's
    update would reach the server in the clear, which secure aggregation exists to prevent.
    """
    quorum = privacy.quorum()
    if protocol.hides_updates and n_sites >= 2:
        quorum = max(quorum, 2)
    return quorum
