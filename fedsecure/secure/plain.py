"""Plaintext aggregation: the server sees every weighted update in the clear."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, ClientRole, Message, Roles, ServerRole

FLOAT32_BYTES = 4


@PROTOCOLS.register("plain")
@dataclass(frozen=True)
class PlainAggregation(AggregationProtocol):
    """No protection: float32 vectors summed in the clear (the reference protocol)."""

    name = "plain"

    def setup(self, n_clients: int, weight_unit: float = 1.0) -> Roles:  # noqa: D102
        return Roles(client=PlainClient(), server=PlainServer())


class PlainClient(ClientRole):
    """A site sending its weighted update in the clear."""

    def protect(self, update: torch.Tensor, weight: float) -> Message:  # noqa: D102
        return Message(
            payload=update * weight,
            weight=float(weight),
            nbytes=update.numel() * FLOAT32_BYTES + FLOAT32_BYTES,
            plaintext=True,
            length=update.numel(),
        )

    def reveal(self, aggregate: Aggregate) -> torch.Tensor:  # noqa: D102
        return aggregate.payload / aggregate.weight


class PlainServer(ServerRole):
    """An aggregator that reads every update."""

    def combine(self, messages: list[Message]) -> Aggregate:  # noqa: D102
        if not messages:
            raise ValueError("no messages to combine")
        total = torch.stack([m.payload for m in messages]).sum(0)
        return Aggregate(
            payload=total,
            weight=sum(m.weight for m in messages),
            nbytes=total.numel() * FLOAT32_BYTES + FLOAT32_BYTES,
            n_messages=len(messages),
            length=messages[0].length,
        )

    def perturb(self, aggregate: Aggregate, noise: torch.Tensor) -> Aggregate:  # noqa: D102
        return replace(aggregate, payload=aggregate.payload + noise.to(aggregate.payload))
