"""What each threat position sees of a federation, built from its trace.

The audit hands an attack a view, never the federation: a view holds what its
party receives under the protocol (messages as they arrived, plaintext or
ciphertext; global models; the released model) and what the party knows by
the protocol (the training recipe it set or was sent), nothing else. Images,
labels and other sites' secrets are not in any view.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from fedsecure.fl.round_loop import FederationResult
from fedsecure.fl.state import ModelState
from fedsecure.fl.trace import Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.positions import Position
from fedsecure.secure.fixed_point import to_grid, weighted_mean
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
    shared: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    """The update of every shared entry (parameters and floating-point buffers), by name; None for ciphertext."""


@dataclass(frozen=True)
class ServerRound:
    """What the server holds of one round.

    Attributes:
        round: the round number (1-based).
        sent_model: the model the server sent the sites, with that round's global state (None when not kept,
            and under CKKS, where the server never holds it; under SecAgg+ it unmasks every sum and holds it).
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
    reads_sum: bool = True  # the protocol lets it read each round's sum (plain, SecAgg+), hence every global model

    @property
    def sees_plaintext(self) -> bool:
        """Whether any message the server kept is readable (False under secure aggregation)."""
        return any(update.plaintext for r in self.rounds for update in r.received.values())

    def local_models(self) -> dict[int, dict[str, nn.Module]]:
        """Each site's local model the server can rebuild, per kept round: the model it sent plus the site's update.

        Returns round -> site name -> model, for the kept rounds with the sent model and some
        plaintext message; empty under secure aggregation.
        """
        rebuilt: dict[int, dict[str, nn.Module]] = {}
        for kept in sorted(self.rounds, key=lambda r: r.round):
            if kept.sent_model is None:
                continue
            models = {site: _moved(kept.sent_model, update.shared)
                      for site, update in kept.received.items() if update.shared is not None}
            if models:
                rebuilt[kept.round] = models
        return rebuilt

    def round(self, number: int) -> ServerRound:
        """The kept record of round ``number``."""
        for kept in self.rounds:
            if kept.round == number:
                return kept
        raise KeyError(f"the server's view holds no round {number}")


@dataclass(frozen=True)
class RevealedRound:
    """One round as a participating site holds it: what it sent, and the sums the protocol revealed to it.

    Every site reads the aggregate (it needs the mean to move its model), and it knows its own
    contribution, so it holds the other sites' sum: under CKKS as in the clear. With two sites
    that sum is the other site's update.

    Attributes:
        round: the round number (1-based).
        sent: the site's own message as it went into the protocol (its clipped and noised update: its own).
        sent_weight: the site's weight as it went into the protocol (divided by the agreed weight unit).
        total: the revealed sum of ``weight * update`` over the senders, as grid integers.
        total_weight: the revealed sum of the senders' weights, on the grid.
        senders: how many messages the aggregate combines.
    """

    round: int
    sent: torch.Tensor = field(repr=False)
    sent_weight: float
    total: np.ndarray = field(repr=False)
    total_weight: int
    senders: int

    def others_mean(self) -> torch.Tensor | None:
        """The weighted mean of the other senders' messages (None when this site sent alone).

        Exact on the grid: the site's own grid contribution is the one the protocol summed.
        """
        # The site's own grid values, computed as every protocol computes them (float32 update times the weight).
        own = to_grid(self.sent.detach().cpu().float().double().numpy() * self.sent_weight)
        rest = self.total_weight - int(to_grid(np.array(self.sent_weight)))
        if self.senders < 2 or rest <= 0:
            return None
        return weighted_mean(self.total - own, rest)


@dataclass(frozen=True)
class ClientView:
    """A participating site's view: the global state it received each round, the released model, and its rounds.

    Attributes:
        site: the site whose seat this is.
        global_states: the global state each kept round started from (flat vectors).
        released_model: the final model.
        revealed: the rounds whose aggregate the site recorded (what it sent, the sums it read); empty unless
            recorded (:meth:`fedsecure.fl.federation.Federation.client_probe_view`).
        recipe: the local training every site runs (the site runs it too).
    """

    position: ClassVar[Position] = Position.CLIENT
    site: str
    global_states: list[torch.Tensor] = field(repr=False)
    released_model: nn.Module = field(repr=False)
    revealed: list[RevealedRound] = field(default_factory=list, repr=False)
    recipe: Recipe | None = None
    private_names: frozenset[str] = frozenset()

    def others_update(self, round_number: int) -> dict[str, torch.Tensor] | None:
        """The other senders' weighted mean update of round ``round_number``, by trainable parameter.

        What this site computes from the sums it revealed and its own message (see
        :class:`RevealedRound`); None when it sent alone or did not record that round.
        """
        kept = next((r for r in self.revealed if r.round == round_number), None)
        others = kept.others_mean() if kept is not None else None
        if others is None:
            return None
        return _trainable(ModelState(self.released_model, private=self.private_names), others)[0]

    def model_at(self, index: int) -> nn.Module:
        """The global model kept state ``index`` holds (with the released model's architecture and private entries)."""
        model = copy.deepcopy(self.released_model)
        ModelState(model, private=self.private_names).set(
            self.global_states[index].to(next(model.parameters()).device)
        )
        return model


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
    parameters, shared = _trainable(state, message.payload)
    return ReceivedUpdate(site, True, parameters, message, shared=shared)


def _trainable(state: ModelState, payload: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A flat update (payload) cut into the state's entries: (trainable parameters only, every shared entry).

    Values past the state's length (adaptive clipping's count) are not entries and are dropped.
    """
    device = next(iter(state.model.parameters())).device
    shared = state.split(payload[: state.numel].to(device))
    trainable = {name for name, _ in state.model.named_parameters()}
    return {name: value for name, value in shared.items() if name in trainable}, shared


def _moved(model: nn.Module, update: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` with ``update`` added to the entries it names."""
    moved = copy.deepcopy(model)
    entries = moved.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, delta in update.items():
            entries[name].add_(delta.to(entries[name].device, entries[name].dtype))
    return moved


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
        server_round(record.round, record.global_model, record.received, state, server_private,
                     reads_sum=trace.server_reads_sum)
        for record in trace.rounds if record.received
    ]
    return ServerView(rounds, recipe, reads_sum=trace.server_reads_sum)


def server_round(
    number: int, global_state: torch.Tensor | None, received: dict[str, Message], state: ModelState,
    server_private: dict[str, torch.Tensor], *, reads_sum: bool = True,
) -> ServerRound:
    """What the server holds of one round: the model it sent (None when not kept) and each message as it arrived.

    Under CKKS the sites apply the decrypted aggregate themselves: the server never holds that
    round's global model (a trace keeps it for the auditor, not for the server). Under SecAgg+
    it unmasks every sum (``reads_sum``), so it holds the global model without any site's update.
    The model sent carries the server's own private entries, not a site's.
    """
    readable = reads_sum or any(message.plaintext for message in received.values())
    return ServerRound(
        round=number,
        sent_model=state.model_with(global_state, server_private) if global_state is not None and readable else None,
        received={site: received_update(site, message, state) for site, message in received.items()},
    )


def client_view(
    result: FederationResult, site: str, recipe: Recipe | None = None, private_names: frozenset[str] = frozenset()
) -> ClientView:
    """Site ``site``'s view of a federation it took part in: the global states of every kept round, the released model.

    Every site receives the same global states; what it sent and read of each aggregate is recorded
    only by a probe (:meth:`fedsecure.fl.federation.Federation.client_probe_view`).

    Args:
        result: the federation's result.
        site: the site whose seat this is.
        recipe: the local training the sites run.
        private_names: the model's entries that never leave a site (FedBN's normalization layers).
    """
    states = [r.global_model for r in result.trace.rounds if r.global_model is not None]
    return ClientView(site, states, result.released_model, recipe=recipe, private_names=frozenset(private_names))


def external_view(result: FederationResult) -> ExternalView:
    """What anyone given the released model sees."""
    return ExternalView(result.released_model)


@dataclass(frozen=True)
class SeatViews:
    """The three seats' views of one federation (what the membership audit observes of it)."""

    external: ExternalView
    server: ServerView
    client: ClientView


def seat_views(
    result: FederationResult, state: ModelState, recipe: Recipe, server_private: dict[str, torch.Tensor],
    client_site: str,
) -> SeatViews:
    """Every seat's view of a federation's ``result`` (see :func:`server_view` for the arguments)."""
    return SeatViews(
        external=external_view(result),
        server=server_view(result.trace, state, recipe, server_private),
        client=client_view(result, client_site, recipe, frozenset(state.get_private())),
    )

