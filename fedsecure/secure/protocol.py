"""The secure-aggregation interface: setup, then protect -> combine -> reveal.

0. ``setup`` is the key setup among the sites. It returns two *roles*: the
   :class:`ClientRole` the sites use, and the :class:`ServerRole` the
   aggregator uses. The server role is built only from what the server may
   hold (for CKKS: a context serialized without the secret key).
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
from typing import Any, ClassVar

import numpy as np
import torch

from fedsecure.errors import FedsecureError, NotSupportedError
from fedsecure.registry import Registry
from fedsecure.secure.fixed_point import weighted_mean


class RoundNotCombined(FedsecureError):
    """An interactive protocol could not produce a round's sum (too few sites stayed to unmask it)."""


@dataclass(frozen=True)
class Message:
    """What one client sends the server in a round.

    Attributes:
        payload: the protocol's representation of ``weight * update``.
        weight: the client's weight, where the protocol sends it in the clear
            (None where it travels inside the payload).
        nbytes: bytes on the wire.
        plaintext: whether the server can read ``payload`` as numbers.
        length: number of update values carried (public: the model's size).
    """

    payload: object
    weight: float | None
    nbytes: int
    plaintext: bool
    length: int


@dataclass(frozen=True)
class Aggregate:
    """The server's sum of the messages it received (what it sends back)."""

    payload: object
    weight: float | None
    nbytes: int
    n_messages: int
    length: int


class ClientRole(ABC):
    """What a site does: protect its update, reveal the aggregate."""

    @abstractmethod
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        """The message that carries ``weight * update`` and ``weight``."""

    def reveal(self, aggregate: Aggregate) -> torch.Tensor:
        """The weighted mean update, ``sum(weight * update) / sum(weight)``, on the CPU."""
        return self.reveal_with_weight(aggregate)[0]

    def reveal_with_weight(self, aggregate: Aggregate) -> tuple[torch.Tensor, int]:
        """What :meth:`reveal` gives, and the weight total it divided by.

        The total is the sum of the senders' weights divided by ``weight_unit``, on the
        fixed-point grid (an integer multiple of ``2**-FRACTION_BITS``, see
        :mod:`fedsecure.secure.fixed_point`): exact, so a site can compare it with the
        total a quorum of sites would carry (:mod:`fedsecure.secure.quorum`).
        """
        total, weight = self.reveal_sum(aggregate)
        return weighted_mean(total, weight), weight

    @abstractmethod
    def reveal_sum(self, aggregate: Aggregate) -> tuple[np.ndarray, int]:
        """The exact sums the aggregate carries: ``sum(weight * update)`` and ``sum(weight)``, as grid integers.

        This is what every site decrypts (or reads) before dividing; a site that subtracts its own
        contribution holds the other sites' sum exactly (:class:`fedsecure.fl.views.ClientView`).
        """


class ServerRole(ABC):
    """What the aggregator does: add messages up, without any secret."""

    @abstractmethod
    def combine(self, messages: list[Message]) -> Aggregate:
        """The sum of ``messages``; never decrypts."""

    def perturb(self, aggregate: Aggregate, noise: torch.Tensor) -> Aggregate:
        """``aggregate`` with ``noise`` added to its weighted sum (central DP noise).

        Raises:
            NotSupportedError: the server cannot add to this aggregate (it holds
                ciphertext it cannot encrypt to); use distributed noise.
        """
        raise NotSupportedError(
            f"the {type(self).__name__} cannot add noise to an aggregate it cannot read; "
            "use placement = 'distributed' (the sites add the noise)"
        )


@dataclass(frozen=True)
class Roles:
    """The two sides a key setup produces."""

    client: ClientRole
    server: ServerRole
    setup_bytes: int = 0  # what the setup sent the server (e.g. the public context)


class AggregationProtocol(ABC):
    """One way of summing client updates at the server."""

    name: ClassVar[str]
    # Whether the server sees only the sum (secure aggregation), never one site's update.
    hides_updates: ClassVar[bool] = False
    # Whether the sum needs the sites again after they sent (SecAgg+'s unmasking): the engines then run the
    # protocol's exchange over a grid (fedsecure.secure.secagg) instead of protect -> combine.
    interactive: ClassVar[bool] = False
    # Whether the sites share a key made before the study (CKKS's secret context, from `fedsecure keygen`).
    needs_site_secret: ClassVar[bool] = False
    # What the server holds of one site's update: "plaintext", "ciphertext" (CKKS) or "masked" (SecAgg+).
    message_form: ClassVar[str] = "plaintext"
    # Whether the server reads the sum (hence every global model): in plaintext and under SecAgg+, not under CKKS.
    server_reads_sum: ClassVar[bool] = True

    def describe(self) -> dict[str, Any]:
        """The protocol's parameters, for the report."""
        return {"name": self.name}

    def check_federation(self, n_sites: int, per_round: int | None) -> None:
        """Refuse a federation of ``n_sites`` (``per_round`` sampled a round; None: all) it cannot protect.

        Raises:
            FedsecureError: in one line, why.
        """
        return None  # plain and CKKS sum any number of sites

    def setup(self, n_clients: int, weight_unit: float = 1.0) -> Roles:
        """Key setup among the sites, in one process: both roles at once.

        Args:
            n_clients: sites taking part.
            weight_unit: a weight the sites agree on (the smallest site's
                weight); weights are divided by it before protection, so that
                values stay in a fixed range on the fixed-point grid.
        """
        secret = self.site_secret()
        public = self.server_material(secret)
        return Roles(
            client=self.client_role(secret, n_clients=n_clients, weight_unit=weight_unit),
            server=self.server_role(public),
            setup_bytes=len(public),
        )

    # The key setup in its parts, for sites and a server in different processes
    # (fedsecure.flower): the sites share the secret over their own channel, the
    # server receives only ``server_material(secret)``.

    def site_secret(self) -> bytes:
        """New key material the sites share (empty when the protocol has no secret)."""
        return b""

    def server_material(self, secret: bytes) -> bytes:
        """What the server may hold, derived from the sites' secret (never the secret itself)."""
        return b""

    @abstractmethod
    def client_role(self, secret: bytes, *, n_clients: int, weight_unit: float) -> ClientRole:
        """A site's role, from the shared secret."""

    @abstractmethod
    def server_role(self, material: bytes) -> ServerRole:
        """The server's role, from ``server_material``; refuses anything holding a secret."""


PROTOCOLS: Registry[type[AggregationProtocol]] = Registry("protocol")
