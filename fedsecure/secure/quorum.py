"""A site's check before it uses an aggregate: does it carry the weight of enough sites?

The server sends every site the aggregate to reveal. A server that sent back
fewer sites' messages than the quorum (in the extreme, one site's ciphertext as
the "aggregate") would have the sites decrypt, for it, a sum with less
distributed noise than accounted for, or one site's update, which then reaches
the server through the next global model. The sites cannot count messages, but
the weight total travels inside the aggregate (encrypted, under CKKS): a site
compares it with the least total ``quorum`` distinct sites' messages could
carry and refuses anything below it.

What this does not stop: the check authenticates nothing. A server that also
computes on ciphertexts (adds one site's ciphertext to itself, adds a plaintext
to the weight slot, masks slots by multiplying with a plaintext) passes it;
against such a server the sites need authenticated secure aggregation
(per-site keys or pairwise masks). With weighted FedAvg the threshold is the
sum of the ``quorum`` smallest weights, so a large site's message alone can
reach it. These rest on the server being honest-but-curious.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from typing_extensions import override

from fedsecure.errors import FedsecureError
from fedsecure.secure.fixed_point import from_grid, to_grid
from fedsecure.secure.protocol import Aggregate, ClientRole, Message


class BelowQuorumError(FedsecureError):
    """An aggregate carries less weight than the quorum of sites it must be summed from."""


def quorum_weight(weights: Sequence[float], weight_unit: float, quorum: int) -> int:
    """The least weight total an aggregate of ``quorum`` distinct sites' messages carries.

    Each site's weight enters the aggregate as ``weight / weight_unit`` rounded to the
    fixed-point grid, as its client role sends it; any ``quorum`` distinct sites carry at
    least the ``quorum`` smallest of those. With client-level DP every weight is one unit,
    so this is exactly ``quorum`` units.

    Args:
        weights: every site's weight (:meth:`~fedsecure.fl.privacy_hooks.PrivacyMechanism.site_weight`
            of its size). A site knows only its own size; the others' are the sizes the server
            relays, so with weighted FedAvg the threshold is as true as those.
        weight_unit: the unit the sites divide their weights by.
        quorum: the fewest sites an aggregate must come from.

    Returns:
        The total on the fixed-point grid (integer multiples of ``2**-FRACTION_BITS``).

    Raises:
        ValueError: ``quorum`` is not between 1 and the number of sites.
    """
    if not 1 <= quorum <= len(weights):
        raise ValueError(f"a quorum of {quorum} among {len(weights)} sites")
    on_grid = sorted(int(to_grid(np.array(weight / weight_unit))) for weight in weights)
    return sum(on_grid[:quorum])


class QuorumCheckedClient(ClientRole):
    """A site's client role that refuses an aggregate carrying less weight than ``quorum`` sites.

    Args:
        client: the protocol's client role.
        quorum: the fewest sites an aggregate must come from (for the message).
        minimum_weight: :func:`quorum_weight` of the federation's sites.
    """

    def __init__(self, client: ClientRole, *, quorum: int, minimum_weight: int) -> None:
        self.client = client
        self.quorum = quorum
        self.minimum_weight = minimum_weight

    @override
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        return self.client.protect(update, weight)

    @override
    def reveal_sum(self, aggregate: Aggregate) -> tuple[np.ndarray, int]:
        """The wrapped role's sums.

        Raises:
            BelowQuorumError: the aggregate's weight total is below the quorum's (so :meth:`reveal` raises too).
        """
        total, weight = self.client.reveal_sum(aggregate)
        if weight < self.minimum_weight:
            raise BelowQuorumError(
                f"the server's aggregate carries a weight total of {float(from_grid(np.array(weight))):.6g}, less "
                f"than the {float(from_grid(np.array(self.minimum_weight))):.6g} of the {self.quorum} site(s) it must "
                "be summed from; refusing to use it (it may be fewer sites' updates, or one site's)"
            )
        return total, weight
