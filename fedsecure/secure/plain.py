"""Plaintext aggregation: the server sees every site's update and weight in the clear.

Sites send their float32 update and their weight; the server sums
``weight * update`` on the fixed-point grid (:mod:`fedsecure.secure.fixed_point`),
exactly as a CKKS server's sum decrypts, so both protocols yield the same model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from typing_extensions import override

from fedsecure.secure.fixed_point import to_grid
from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, ClientRole, Message, ServerRole

FLOAT32_BYTES = 4


@PROTOCOLS.register("plain")
@dataclass(frozen=True)
class PlainAggregation(AggregationProtocol):
    """No protection: float32 updates, summed in the clear (the reference protocol)."""

    name = "plain"

    @override
    def client_role(self, secret: bytes, *, n_clients: int, weight_unit: float) -> PlainClient:
        return PlainClient(weight_unit)

    @override
    def server_role(self, material: bytes) -> PlainServer:
        return PlainServer()


class PlainClient(ClientRole):
    """A site sending its update and its (normalized) weight in the clear."""

    def __init__(self, weight_unit: float) -> None:
        if weight_unit <= 0:
            raise ValueError(f"weight_unit must be > 0, got {weight_unit}")
        self.weight_unit = weight_unit

    @override
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        return Message(
            payload=update.detach().float(),
            weight=weight / self.weight_unit,
            nbytes=update.numel() * FLOAT32_BYTES + FLOAT32_BYTES,
            plaintext=True,
            length=update.numel(),
        )

    @override
    def reveal_sum(self, aggregate: Aggregate) -> tuple[np.ndarray, int]:
        assert isinstance(aggregate.payload, np.ndarray) and aggregate.weight is not None
        return aggregate.payload, int(aggregate.weight)


class PlainServer(ServerRole):
    """An aggregator that reads every update."""

    @override
    def combine(self, messages: list[Message]) -> Aggregate:
        if not messages:
            raise ValueError("no messages to combine")
        total = sum(to_grid(m.payload.cpu().double().numpy() * m.weight) for m in messages)
        total_weight = int(sum(to_grid(np.array(m.weight)) for m in messages))
        return Aggregate(
            payload=total,
            weight=total_weight,
            # The exact integer sums stay with the server; the sites receive the float32 mean.
            nbytes=total.size * FLOAT32_BYTES + FLOAT32_BYTES,
            n_messages=len(messages),
            length=messages[0].length,
        )

    @override
    def perturb(self, aggregate: Aggregate, noise: torch.Tensor) -> Aggregate:
        return replace(aggregate, payload=aggregate.payload + to_grid(noise.cpu().double().numpy()))
