"""The server's round loop, shared by the in-process engine and the Flower engine.

A round is the same on either engine: sample the sites (the privacy
mechanism's sampling, if it has one), stop if the next round would overspend
the budget, collect the messages of the sites that answered, refuse to combine
fewer than the quorum, combine, account, hand the aggregate back. The engines
differ only in how the server reaches the sites, which a :class:`SiteChannel`
hides: in-process site runners, or Flower SuperNodes over a ``Grid``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal, Protocol

import torch
from torch import nn

from fedsecure.fl.privacy_hooks import FederationFacts, PrivacyMechanism
from fedsecure.fl.server import Evaluation, combine_round, quorum_shortfall, sample_participants
from fedsecure.fl.trace import ClientRound, RoundRecord, Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.secure.protocol import Aggregate, AggregationProtocol, Message, RoundNotCombined, ServerRole

KeepMessages = Literal["none", "first", "ends", "all"]


@dataclass(frozen=True)
class Cost:
    """What a federation cost, summed over its rounds (see :class:`~fedsecure.fl.trace.Trace`)."""

    train_seconds: float
    protect_seconds: float
    encrypt_seconds: float
    aggregate_seconds: float
    decrypt_seconds: float
    bytes_up_per_round: float
    bytes_down_per_round: float
    setup_bytes: int
    bytes_per_parameter: float

    @classmethod
    def of(cls, trace: Trace) -> Cost:
        """The cost recorded in ``trace``."""
        return cls(
            train_seconds=trace.train_seconds, protect_seconds=trace.protect_seconds,
            encrypt_seconds=trace.encrypt_seconds, aggregate_seconds=trace.aggregate_seconds,
            decrypt_seconds=trace.decrypt_seconds, bytes_up_per_round=trace.bytes_up_per_round,
            bytes_down_per_round=trace.bytes_down_per_round, setup_bytes=trace.setup_bytes,
            bytes_per_parameter=trace.bytes_per_parameter,
        )


@dataclass(frozen=True)
class FederationResult:
    """What a federation run produced, whichever engine ran it.

    Attributes:
        trace: what each party saw, round by round (the evidence the audit's views are built from).
        evaluation: the released model's utility on the sites' test sets.
        released_model: the model the federation releases: its architecture with the final global
            state loaded (what an external party receives).
        protocol_parameters: the aggregation protocol's settings, as the report states them.
    """

    trace: Trace
    evaluation: Evaluation
    released_model: nn.Module
    protocol_parameters: dict

    @property
    def cost(self) -> Cost:
        """Compute and communication, summed over the rounds."""
        return Cost.of(self.trace)


def federation_facts(
    *, site_sizes: list[int], rounds: int, training: LocalTraining, clients_per_round: int | None, seed: int,
    device: torch.device, private_names: set[str] | frozenset[str], protocol: AggregationProtocol,
    full_batch: bool = False,
) -> FederationFacts:
    """What a privacy mechanism calibrates against, as either engine knows it."""
    return FederationFacts(
        site_sizes=[int(n) for n in site_sizes], rounds=rounds, training=training,
        clients_per_round=clients_per_round, seed=seed, device=device, private_names=frozenset(private_names),
        updates_hidden=protocol.hides_updates, full_batch=full_batch,
    )


class SiteChannel(Protocol):
    """How the round loop reaches the sites."""

    def reachable(self, participants: list[int]) -> list[int]:
        """The sampled sites the server can still reach (a dropped Flower site is not)."""
        ...

    def global_model(self) -> torch.Tensor | None:
        """The global state the sites start this round from, where the server can see it (None: it cannot)."""
        ...

    def train(self, round_number: int, participants: list[int]) -> list[tuple[ClientRound, Message]]:
        """The messages of the participants that answered, with what each site's part cost."""
        ...

    def deliver(self, round_number: int, aggregate: Aggregate, record: RoundRecord) -> None:
        """Hand the round's aggregate to the sites (they reveal it and move the global model)."""
        ...

    def finish(self, trace: Trace) -> tuple[torch.Tensor, Evaluation]:
        """The final global state (flat, on the CPU) and its evaluation."""
        ...


@dataclass
class RoundLoop:
    """The rounds of one federation, from the server's side.

    Args:
        privacy: the calibrated privacy mechanism.
        protocol: the aggregation protocol (its ``combine`` runs in ``server``).
        server: the protocol's server role.
        n_sites: sites in the federation.
        rounds: rounds planned.
        clients_per_round: sites sampled per round (None: all).
        seed: the federation's root seed.
        length: values in one update.
        device: where the server adds up.
        keep_messages: which rounds' received messages the trace keeps.
    """

    privacy: PrivacyMechanism
    protocol: AggregationProtocol
    server: ServerRole
    n_sites: int
    rounds: int
    clients_per_round: int | None
    seed: int
    length: int
    device: torch.device
    keep_messages: KeepMessages = "first"

    def run(
        self, channel: SiteChannel, trace: Trace, on_round: Callable[[RoundRecord], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> tuple[torch.Tensor, Evaluation]:
        """Run every round into ``trace``; the final global state and its evaluation.

        Args:
            channel: how the server reaches the sites.
            trace: where the rounds, the events and the privacy report go.
            on_round: called with each finished round's record.
            on_event: called with each event line (also kept in ``trace.events``).
        """

        def event(line: str) -> None:
            trace.events.append(line)
            if on_event is not None:
                on_event(line)

        for round_number in range(1, self.rounds + 1):
            participants = channel.reachable(sample_participants(
                self.privacy, seed=self.seed, round_number=round_number, n_sites=self.n_sites,
                clients_per_round=self.clients_per_round,
            ))
            if not self.privacy.round_fits(participants):
                trace.stopped_early = True  # the next round would overspend the privacy budget
                break
            record = self._round(round_number, participants, channel, event)
            trace.rounds.append(record)
            if on_round is not None:
                on_round(record)
        final_global, evaluation = channel.finish(trace)
        trace.final_global = final_global
        trace.privacy = self.privacy.report(rounds_completed=len(trace.rounds), stopped_early=trace.stopped_early)
        if trace.rounds and trace.rounds[-1].utility is None:
            trace.rounds[-1].utility = evaluation.global_
        return final_global, evaluation

    def _round(
        self, round_number: int, participants: list[int], channel: SiteChannel, event: Callable[[str], None]
    ) -> RoundRecord:
        global_model = channel.global_model()
        lost = False
        try:
            answered = channel.train(round_number, participants)
        except RoundNotCombined as exc:  # an interactive protocol lost too many sites before they sent
            event(str(exc))
            answered, lost = [], True
        messages = [message for _, message in answered]
        shortfall = (quorum_shortfall(self.privacy, self.protocol, self.n_sites, len(messages), round_number)
                     if messages else None)
        if shortfall is not None:
            event(shortfall)
        elif not participants:
            # Privacy spent all the same: the sampling itself is part of what the accountant counts.
            event(f"round {round_number}: no site was sampled; the global model stays as it was")
        elif not messages and not lost:
            event(f"round {round_number}: no site answered; the global model stays as it was")
        aggregate = None
        if messages and shortfall is None:
            try:
                aggregate, combine_seconds = combine_round(
                    self.server, self.privacy, messages, length=self.length, seed=self.seed,
                    round_number=round_number, device=self.device,
                )
            except RoundNotCombined as exc:  # an interactive protocol lost too many sites before unmasking
                event(str(exc))
        if aggregate is None:
            # Accounted as run: the sampled sites trained (and may have sent) before the round was dropped.
            return RoundRecord(round=round_number, clients=[], combine_seconds=0.0, bytes_down=0,
                               epsilon=self.privacy.end_round(participants), global_model=global_model)
        first, last = round_number == 1, round_number == self.rounds
        keep = {"none": False, "first": first, "ends": first or last, "all": True}[self.keep_messages]
        record = RoundRecord(
            round=round_number,
            clients=[client for client, _ in answered],
            combine_seconds=combine_seconds,
            bytes_down=aggregate.nbytes * self.n_sites,
            received={client.site: message_on_cpu(message) for client, message in answered} if keep else None,
            global_model=global_model,
        )
        channel.deliver(round_number, aggregate, record)
        # After the sites applied the round: a mechanism's end of round may read what they revealed.
        record.epsilon = self.privacy.end_round(participants)
        return record


def message_on_cpu(message: Message) -> Message:
    """``message`` with its payload on the CPU (what a trace keeps)."""
    if isinstance(message.payload, torch.Tensor):
        return replace(message, payload=message.payload.detach().cpu())
    return message
