"""What each threat position sees of a federation, built from its trace.

The audit hands an attack a view, never the federation: a view holds what its
party receives under the protocol (messages as they arrived, plaintext or
ciphertext; global models; the released model) and what the party knows by
the protocol (the training recipe it set or was sent), nothing else. Images,
labels and other sites' secrets are not in any view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from fedsecure.fl.round_loop import FederationResult
from fedsecure.fl.state import ModelState
from fedsecure.fl.trace import Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.positions import Position
from fedsecure.secure.protocol import Message


@dataclass(frozen=True)
class Recipe:
    """The local training every site runs, as the server set it (and so knows it).

    Attributes:
        training: the local training settings.
        one_full_batch_step: the strategy sends one full-batch gradient step (FedSGD), not epochs of SGD.
    """

    training: LocalTraining
    one_full_batch_step: bool


@dataclass(frozen=True)
class ReceivedUpdate:
    """One site's message in one round, as the server received it.

    Attributes:
        site: the site's name.
        plaintext: whether the server can read the update (False under secure aggregation).
        parameters: the update of each trainable parameter, by name (None when it is ciphertext).
        message: the message itself, as it arrived.
    """

    site: str
    plaintext: bool
    parameters: dict[str, torch.Tensor] | None = field(repr=False)
    message: Message = field(repr=False)


@dataclass(frozen=True)
class ServerRound:
    """What the server holds of one round.

    Attributes:
        round: the round number (1-based).
        sent_model: the model the server sent the sites, with that round's global state (None when not kept).
        received: each participating site's message, by site name.
    """

    round: int
    sent_model: nn.Module | None = field(repr=False)
    received: dict[str, ReceivedUpdate] = field(repr=False)


@dataclass(frozen=True)
class ServerView:
    """The aggregation server's view: every round it kept, and the recipe it set."""

    position: ClassVar[Position] = Position.SERVER
    rounds: list[ServerRound]
    recipe: Recipe

    @property
    def sees_plaintext(self) -> bool:
        """Whether any message the server kept is readable (False under secure aggregation)."""
        return any(update.plaintext for r in self.rounds for update in r.received.values())

    def round(self, number: int) -> ServerRound:
        """The kept record of round ``number``."""
        for kept in self.rounds:
            if kept.round == number:
                return kept
        raise KeyError(f"the server's view holds no round {number}")


@dataclass(frozen=True)
class ClientView:
    """A participating site's view: the global state it received each round, and the released model."""

    position: ClassVar[Position] = Position.CLIENT
    global_states: list[torch.Tensor] = field(repr=False)
    released_model: nn.Module = field(repr=False)


@dataclass(frozen=True)
class ExternalView:
    """An external party's view: the released model only."""

    position: ClassVar[Position] = Position.EXTERNAL
    released_model: nn.Module = field(repr=False)


def received_update(site: str, message: Message, state: ModelState) -> ReceivedUpdate:
    """``message`` as the server reads it: the update of each trainable parameter when it is plaintext.

    A plaintext payload is the (clipped, noised) update of the shared state; adaptive
    clipping appends one count value, which is not a parameter.
    """
    if not message.plaintext:
        return ReceivedUpdate(site, False, None, message)
    assert isinstance(message.payload, torch.Tensor)
    device = next(iter(state.model.parameters())).device
    shared = state.split(message.payload[: state.numel].to(device))
    trainable = {name for name, _ in state.model.named_parameters()}
    return ReceivedUpdate(site, True, {name: value for name, value in shared.items() if name in trainable}, message)


def server_view(
    trace: Trace, state: ModelState, recipe: Recipe, server_private: dict[str, torch.Tensor]
) -> ServerView:
    """The server's view of a federation from its ``trace`` (the rounds whose messages it kept).

    Args:
        trace: the federation's trace.
        state: the federation's model state (its architecture and which entries are shared).
        recipe: the training recipe the server set.
        server_private: the server's own values of the private entries (FedBN's normalization
            layers never leave a site, so the models it sent carry these).
    """
    rounds = [
        ServerRound(
            round=record.round,
            sent_model=(
                state.model_with(record.global_model, server_private) if record.global_model is not None else None
            ),
            received={site: received_update(site, message, state) for site, message in record.received.items()},
        )
        for record in trace.rounds if record.received
    ]
    return ServerView(rounds, recipe)


def client_view(result: FederationResult) -> ClientView:
    """A participating site's view: the global states of every kept round, and the released model."""
    states = [r.global_model for r in result.trace.rounds if r.global_model is not None]
    return ClientView(states, result.released_model)


def external_view(result: FederationResult) -> ExternalView:
    """What anyone given the released model sees."""
    return ExternalView(result.released_model)
