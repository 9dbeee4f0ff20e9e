"""Plaintext aggregation: the server sees every weighted update in the clear."""

from __future__ import annotations

import torch

from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, Message

FLOAT32_BYTES = 4


@PROTOCOLS.register("plain")
class PlainAggregation(AggregationProtocol):
    """No protection: float32 vectors summed in the clear (the reference protocol)."""

    name = "plain"

    def protect(self, update: torch.Tensor, weight: float) -> Message:  # noqa: D102
        return Message(
            payload=update * weight,
            weight=float(weight),
            nbytes=update.numel() * FLOAT32_BYTES + FLOAT32_BYTES,
            plaintext=True,
        )

    def combine(self, messages: list[Message]) -> Aggregate:  # noqa: D102
        if not messages:
            raise ValueError("no messages to combine")
        total = torch.stack([m.payload for m in messages]).sum(0)
        return Aggregate(
            payload=total,
            weight=sum(m.weight for m in messages),
            nbytes=total.numel() * FLOAT32_BYTES + FLOAT32_BYTES,
            n_messages=len(messages),
        )

    def reveal(self, aggregate: Aggregate) -> torch.Tensor:  # noqa: D102
        return aggregate.payload / aggregate.weight
