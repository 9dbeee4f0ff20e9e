"""Flower's simulation engine: every site a virtual SuperNode, on this machine.

``fedsecure audit --engine flower`` runs each scenario's federation here: the
same ClientApp and ServerApp as a deployment, with each virtual SuperNode
handed its site of the spec's federated data in memory (no files). For CKKS,
the sites' shared key is generated here and handed to the virtual sites only;
the ServerApp receives the context without the secret key from the sites, as
in a deployment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import tomli_w
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from fedsecure.config.spec import AuditSpec, ScenarioSpec, parse_spec
from fedsecure.data.federated import FederatedData
from fedsecure.fl.federation import FederationResult
from fedsecure.fl.trace import RoundRecord
from fedsecure.flower.federation import FlowerFederation
from fedsecure.flower.site_app import make_client_app
from fedsecure.flower.site_side import LocalSite


def run_in_simulation(
    spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, *,
    on_round: Callable[[RoundRecord], None] | None = None, round_timeout: float = 600.0,
) -> FederationResult:
    """Run ``scenario``'s federation on Flower's simulation engine, one virtual SuperNode per site.

    Args:
        spec: the spec as it runs (after ``--quick`` and ``--data``): the sites rebuild
            everything from its text, so they get this one, not the file's.
        scenario: the scenario to run.
        data: the federated data; virtual site k is handed ``data.sites[k]``.
        on_round: called with each finished round's record.
        round_timeout: seconds to wait for the sites' answers to one message.
    """
    text = tomli_w.dumps(spec.model_dump(mode="json", exclude_none=True, exclude_unset=True))
    loaded = parse_spec(text, "<the audit's spec, as run>")
    protocol = scenario.protocol_instance()
    secret = protocol.site_secret()
    sites = data.sites
    client_app = make_client_app(LocalSite(data=lambda k, spec: sites[k], secret=lambda: secret))
    outcome: dict[str, object] = {}
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            federation = FlowerFederation(grid, loaded, scenario, round_timeout=round_timeout, transport="simulation")
            outcome["result"] = federation.run(on_round=on_round)
        except BaseException as exc:  # re-raised in the caller's thread, with its own type
            outcome["error"] = exc

    # Flower logs every message, and that run_simulation is deprecated in favour of `flwr run` against a
    # simulation SuperLink (a second server process for an audit that runs in this one); errors still
    # surface, as the exception the ServerApp raised.
    flower_logger = logging.getLogger("flwr")
    level = flower_logger.level
    flower_logger.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray's notice about GPU variables
    try:
        run_simulation(
            server_app=server_app, client_app=client_app, num_supernodes=len(sites),
            backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                            "init_args": {"include_dashboard": False, "log_to_driver": False}},
        )
    finally:
        flower_logger.setLevel(level)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    if "result" not in outcome:
        raise RuntimeError("Flower's simulation ended without running the ServerApp")
    return outcome["result"]  # type: ignore[return-value]
