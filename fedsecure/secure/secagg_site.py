"""A site's side of SecAgg+: Flower's ``secaggplus_mod`` answering one stage message, and a grid of in-process sites.

The Flower ClientApp (:mod:`fedsecure.flower.site_app`) and the in-process
engine's :class:`LocalGrid` answer every stage with :func:`answer_stage`, so
both run Flower's own client protocol; only the transport differs.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.client.mod.secure_aggregation.secaggplus_mod import secaggplus_mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedsecure.errors import FedsecureError
from fedsecure.secure import secagg_masks


@contextlib.contextmanager
def quiet_flower_log() -> Iterator[None]:
    """Flower's log at warnings and above: its SecAgg+ code logs every stage of every site."""
    flower_log = logging.getLogger("flwr")
    level = flower_log.level
    flower_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        flower_log.setLevel(level)


COST_RECORD = "secagg-cost"
"""A stage reply's record of the seconds the site spent on the protocol (not on training)."""

Contribution = Callable[[], tuple[np.ndarray, int]]
"""Called when the site must send: its update (flat) and its integer weight."""


def answer_stage(
    message: FlowerMessage, state: RecordDict, contribution: Contribution, rounding_seed: int
) -> FlowerMessage:
    """The site's reply to one SecAgg+ stage message (Flower's client mod, with its state in ``state``).

    Args:
        message: the server's stage message.
        state: what the site keeps between messages (the SuperNode's ``context.state``).
        contribution: the site's update and weight, asked for at the masked-vector stage only.
        rounding_seed: seeds the quantizer's stochastic rounding, which Flower draws from numpy's
            global generator (saved and restored around it), so a seeded run repeats.

    Raises:
        MaskGeneratorError: Flower's own 32-bit mask generator is in place.
    """
    secagg_masks.require_installed()
    node = message.metadata.dst_node_id
    context = Context(run_id=message.metadata.run_id, node_id=node, node_config={}, state=state, run_config={})

    training = 0.0

    def send_update(incoming: FlowerMessage, _: Context) -> FlowerMessage:
        nonlocal training
        started = time.perf_counter()
        vector, weight = contribution()
        training = time.perf_counter() - started
        fitres = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([np.asarray(vector, dtype=np.float64)]),
                        num_examples=int(weight), metrics={})
        return FlowerMessage(compat.fitres_to_recorddict(fitres, keep_input=False), reply_to=incoming)

    saved = np.random.get_state()
    np.random.seed(rounding_seed % 2**32)
    started = time.perf_counter()
    try:
        with quiet_flower_log():
            reply = secaggplus_mod(message, context, send_update)
    finally:
        np.random.set_state(saved)
    # The protocol's own work at the site this stage (keys, shares, masks), without the training it asked for.
    reply.content.config_records[COST_RECORD] = ConfigRecord({"seconds": time.perf_counter() - started - training})
    return reply


class SiteLeft(FedsecureError):
    """Raised by an in-process site that leaves mid-round (a test's dropout)."""


class LocalGrid:
    """Flower's ``Grid`` for sites in this process: each node answers through :func:`answer_stage`.

    Args:
        contributions: each node's contribution (see :data:`Contribution`).
        rounding_seeds: each node's stochastic-rounding seed.
        leaves: a node that leaves, and the stage it leaves at (it answers nothing from then on).
    """

    def __init__(
        self, contributions: dict[int, Contribution], rounding_seeds: dict[int, int],
        leaves: dict[int, str] | None = None,
    ) -> None:
        self.contributions = contributions
        self.rounding_seeds = rounding_seeds
        self.states = {node: RecordDict() for node in contributions}
        self.leaves = leaves or {}
        self.gone: set[int] = set()

    def send_and_receive(self, messages: list[FlowerMessage], *, timeout: float | None = None) -> list[FlowerMessage]:
        """Each live node's reply, in order (a node that left answers nothing)."""
        from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            stage = str(message.content.config_records[RECORD_KEY_CONFIGS][Key.STAGE])
            if self.leaves.get(node) == stage:
                self.gone.add(node)
            if node in self.gone:
                continue
            # A copy, as the wire would deliver it: Flower's workflow sends one content object to every site of a stage,
            # and the mod takes the stage out of the copy it receives.
            delivered = copy.deepcopy(message)
            seed = self.rounding_seeds[node]
            replies.append(answer_stage(delivered, self.states[node], self.contributions[node], seed))
        return replies
