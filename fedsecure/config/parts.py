"""A scenario's objects built from the spec, the same way by every party that needs them.

Every party of a Flower federation rebuilds the scenario's model, strategy,
privacy mechanism and protocol from the spec it was sent, and calibrates the
mechanism from the same federation facts, so that a site's noise and the
server's accounting agree. The audit builds them the same way to calibrate
every DP scenario before any training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsecure.config.spec import AuditSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.round_loop import federation_facts
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import Strategy
from fedsecure.fl.training import LocalTraining
from fedsecure.models import build_model
from fedsecure.secure.protocol import AggregationProtocol

SHAPE_KEYS = ("in_channels", "n_classes", "depth", "height", "width")
"""The model's input and output shape, as the server tells the sites (the sites' data decide it).

``depth`` is 0 for 2D images: every value stays an integer on the wire.
"""


def model_shape(in_channels: int, n_classes: int, image_size: tuple[int, ...]) -> dict[str, int]:
    """``SHAPE_KEYS`` to their values for images of ``image_size`` ((H, W) or (D, H, W))."""
    *depth, height, width = (int(side) for side in image_size)
    return {"in_channels": int(in_channels), "n_classes": int(n_classes), "depth": depth[0] if depth else 0,
            "height": height, "width": width}


def image_size_of(shape: dict[str, int]) -> tuple[int, ...]:
    """The spatial size a :func:`model_shape` describes: (H, W), or (D, H, W) when ``depth`` is set."""
    plane = (int(shape["height"]), int(shape["width"]))
    return (int(shape["depth"]), *plane) if int(shape.get("depth", 0)) else plane


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
    model = build_model(spec.model.name, int(shape["in_channels"]), int(shape["n_classes"]), image_size_of(shape),
                        spec.seed)
    privacy = scenario.dp.mechanism() if scenario.dp is not None else PrivacyMechanism()
    model = privacy.prepare_model(model).to(device)
    strategy = spec.federation.strategy_instance()
    protocol = scenario.protocol_instance()
    training = scenario.local_training(spec.federation, spec.data.task)
    private = strategy.private_names(model)
    privacy.calibrate(federation_facts(
        site_sizes=site_sizes, rounds=spec.federation.rounds, training=training,
        clients_per_round=spec.federation.clients_per_round, seed=spec.seed, device=device,
        private_names=private, protocol=protocol, full_batch=strategy.one_full_batch_step,
    ))
    return ScenarioParts(ModelState(model, private=private), strategy, privacy, protocol, training)


def build_parts_on(spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, device: torch.device) -> ScenarioParts:
    """:func:`build_parts` for a federation whose sites' data is at hand (the audit's: shape and sizes read off it)."""
    shape = model_shape(data.in_channels, data.n_classes, data.image_size)
    return build_parts(spec, scenario, shape, [site.n_train for site in data.sites], device)
