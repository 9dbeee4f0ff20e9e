"""The Flower ClientApp: one hospital's side of a fedsecure federation (the work is :mod:`fedsecure.flower.site_side`).

Flower starts a fresh ClientApp process for every message, and importing
torch, Opacus and MONAI costs seconds. This module imports only Flower and
fedsecure's SecAgg+ site code; the engine comes in with the first message
that trains, evaluates or sets up. SecAgg+'s key-exchange and unmask stages,
three of its four messages a round, never load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage

from fedsecure.errors import FedsecureError
from fedsecure.secure.secagg_site import Contribution, answer_stage

if TYPE_CHECKING:
    from fedsecure.flower.site_side import LocalSite


def make_client_app(local: LocalSite | None = None) -> ClientApp:
    """The ClientApp; ``local`` supplies data and key (default: the node config)."""
    app = ClientApp()

    def site_of(context: Context) -> LocalSite:
        from fedsecure.flower.site_side import from_node_config

        return local if local is not None else from_node_config(dict(context.node_config))

    @app.query()
    def setup(message: Message, context: Context) -> Message:
        from fedsecure.flower import site_side

        return site_side.setup(message, context, site_of(context))

    @app.train()
    def train(message: Message, context: Context) -> Message:
        configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
        if configs is not None and str(configs[Key.STAGE]) != Stage.COLLECT_MASKED_VECTORS:
            # SecAgg+'s key exchange or unmask stage: Flower's client mod alone, no engine.
            return answer_stage(message, context.state, _no_update_at(str(configs[Key.STAGE])), rounding_seed=0)
        from fedsecure.flower import site_side

        if configs is not None:
            return site_side.secagg_collect(message, context, site_of(context))
        return site_side.train(message, context, site_of(context))

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        from fedsecure.flower import site_side

        return site_side.evaluate(message, context, site_of(context))

    return app


def _no_update_at(stage: str) -> Contribution:
    def refuse() -> tuple[np.ndarray, int]:
        raise FedsecureError(f"SecAgg+ asked for the site's update at the {stage} stage")

    return refuse


app = make_client_app()
"""The ClientApp a deployed SuperNode runs (``fedsecure.flower.site_app:app``)."""
