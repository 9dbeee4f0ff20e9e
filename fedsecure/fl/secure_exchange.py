"""An interactive protocol's round among sites in this process: Flower's SecAgg+ exchange over a :class:`LocalGrid`.

The in-process engine's counterpart of the Flower engine's exchange
(:mod:`fedsecure.flower.federation`): the same workflow stages at the server and
the same client mod at every site; the grid calls the sites directly. A site
trains when the masked-vector stage asks for its contribution, as a Flower
site does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from fedsecure.fl.site import SiteRunner
from fedsecure.fl.trace import ClientRound
from fedsecure.secure.protocol import ClientRole, Message
from fedsecure.secure.secagg import RecordingGrid, SecAggServer
from fedsecure.secure.secagg_site import Contribution, LocalGrid
from fedsecure.seeding import numpy_rng


def node_of(k: int) -> int:
    """Site ``k``'s node id on a local grid (Flower's ids start at 1; 0 is the server's)."""
    return k + 1


def masked_message(reply_configs: dict, length: int, nbytes: int) -> Message:
    """What the server received from one site at the masked-vector stage, as a protocol message."""
    arrays = [bytes_to_ndarray(b) for b in reply_configs[Key.MASKED_PARAMETERS]]
    masked = np.concatenate([np.asarray(a).reshape(-1) for a in arrays])
    return Message(payload=masked, weight=None, nbytes=nbytes, plaintext=False, length=length)


def exchange_in_process(
    server: SecAggServer, sites: list[SiteRunner], participants: list[int], global_vector: torch.Tensor,
    round_number: int, client: ClientRole, *, weight_unit: float, seed: int, length: int,
) -> tuple[list[tuple[ClientRound, Message]], RecordingGrid]:
    """Stages 0 to 2 of a SecAgg+ round among ``participants``: what each site's part cost, and its masked vector.

    Returns:
        The answers (as the round loop takes them) and the grid, whose byte counts grow with the unmask stage.

    Raises:
        RoundNotCombined: fewer sites than the threshold.
    """
    records: dict[int, ClientRound] = {}

    def contribution(k: int) -> Contribution:
        def send() -> tuple[np.ndarray, int]:
            _, records[k] = sites[k].message(global_vector, round_number, client)
            assert sites[k].last_sent is not None
            return sites[k].last_sent.detach().cpu().double().numpy().reshape(-1), int(sites[k].weight)

        return send

    rounding = {
        node_of(k): int(numpy_rng(seed, "secagg-rounding", k, round_number).integers(2**32)) for k in participants
    }
    grid = RecordingGrid(LocalGrid({node_of(k): contribution(k) for k in participants}, rounding))
    replies = server.collect(
        grid, round_number, [node_of(k) for k in participants], weight_unit=weight_unit,
        max_weight=int(max(sites[k].weight for k in participants)),
    )
    answered = []
    for k in participants:
        reply = replies.get(node_of(k))
        if reply is None:
            continue
        message = masked_message(reply.content.config_records[RECORD_KEY_CONFIGS], length, grid.bytes_up[node_of(k)])
        cost = grid.protect_seconds[node_of(k)]  # the protocol's work at the site, not the stand-in protect
        answered.append((replace(records[k], bytes_up=message.nbytes, protect_seconds=cost), message))
    return answered, grid
