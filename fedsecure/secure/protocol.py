"""The secure-aggregation interface: protect -> combine -> reveal.

1. Each client ``protect(update, weight)`` and sends the message.
2. The server ``combine(messages)``: it only ever adds messages up, so a
   protocol whose messages are ciphertexts never needs a secret key on the server.
3. Clients ``reveal(aggregate)``: the weighted mean of the updates that arrived.

Each client scales its own update by its weight and sends the weight too, so
the server needs no per-client multiplication and the mean is correct for
whichever clients' messages actually arrived (a dropout costs nothing).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from fedsecure.registry import Registry


@dataclass(frozen=True)
class Message:
    """What one client sends the server in a round.

    Attributes:
        payload: the protocol's representation of ``weight * update``.
        weight: the protocol's representation of the client's weight.
        nbytes: bytes on the wire.
        plaintext: whether the server can read ``payload`` as numbers.
    """

    payload: object
    weight: object
    nbytes: int
    plaintext: bool


@dataclass(frozen=True)
class Aggregate:
    """The server's sum of the messages it received (what it sends back)."""

    payload: object
    weight: object
    nbytes: int
    n_messages: int


class AggregationProtocol(ABC):
    """One way of summing client updates at the server."""

    name: ClassVar[str]

    def setup(self, n_clients: int) -> None:
        """Key setup among the participating clients (nothing for plaintext)."""

    @abstractmethod
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        """Client side: the message that carries ``weight * update`` and ``weight``."""

    @abstractmethod
    def combine(self, messages: list[Message]) -> Aggregate:
        """Server side: the sum of ``messages``; never decrypts."""

    @abstractmethod
    def reveal(self, aggregate: Aggregate) -> torch.Tensor:
        """Client side: the weighted mean update, ``sum(weight * update) / sum(weight)``."""


PROTOCOLS: Registry[type[AggregationProtocol]] = Registry("protocol")
