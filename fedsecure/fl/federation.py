"""The federation: sites train locally, a protocol aggregates, the strategy moves the global model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from fedsecure.data.federated import FederatedData
from fedsecure.fl.server import (
    Evaluation,
    SiteUtility,
    combine_round,
    pooled_evaluation,
    quorum_shortfall,
    sample_participants,
)
from fedsecure.fl.site import SiteRunner, next_global
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import STRATEGIES, Strategy
from fedsecure.fl.trace import RoundRecord, Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.fl.privacy_hooks import FederationFacts, PrivacyMechanism
from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import AggregationProtocol, Message, Roles

KeepMessages = Literal["none", "first", "all"]

__all__ = ["Evaluation", "Federation", "FederationResult", "SiteUtility"]


@dataclass(frozen=True)
class FederationResult:
    """What a federation run produced."""

    trace: Trace
    evaluation: Evaluation


class Federation:
    """Federated training of one model across sites, in one process.

    Args:
        data: the sites and their local data.
        model: the initial global model (moved to ``device``, trained in place).
        strategy: client and server behaviour (see :mod:`fedsecure.fl.strategies`).
        training: local training settings of every site.
        rounds: communication rounds.
        protocol: how updates are aggregated (default: plaintext).
        clients_per_round: sites sampled uniformly without replacement each
            round; None means all sites every round.
        seed: root seed of batch order and client sampling.
        device: where training runs.
        keep_messages: which rounds' received messages the trace keeps.
        keep_global_models: keep the global model each round started from.
        evaluate_every: evaluate the global model every this many rounds (0: only
            at the end).
        privacy: a differential-privacy mechanism wrapping local training, updates
            and the aggregate (see :mod:`fedsecure.privacy`); None for none.

    Example:
        >>> fed = Federation(data, build_model("cnn", 1, 2, (28, 28)), FedAvg(),
        ...                  training=LocalTraining(epochs=1), rounds=20)
        >>> result = fed.run()
        >>> result.evaluation.global_.auc
    """

    def __init__(
        self,
        data: FederatedData,
        model: nn.Module,
        strategy: Strategy,
        *,
        training: LocalTraining,
        rounds: int,
        protocol: AggregationProtocol | None = None,
        clients_per_round: int | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        keep_messages: KeepMessages = "first",
        keep_global_models: bool = True,
        evaluate_every: int = 1,
        privacy: PrivacyMechanism | None = None,
    ) -> None:
        n_sites = len(data.sites)
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if clients_per_round is not None and not 1 <= clients_per_round <= n_sites:
            raise ValueError(f"clients_per_round must be in [1, {n_sites}], got {clients_per_round}")
        self.data = data
        self.device = torch.device(device)
        self.privacy = privacy if privacy is not None else PrivacyMechanism()
        self.model = self.privacy.prepare_model(model).to(self.device)
        self.strategy = strategy
        self.protocol = protocol if protocol is not None else PlainAggregation()
        self.training = training
        self.rounds = rounds
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.keep_messages = keep_messages
        self.keep_global_models = keep_global_models
        self.evaluate_every = evaluate_every
        self.state = ModelState(self.model, private=strategy.private_names(self.model))
        self.privacy.calibrate(
            FederationFacts(
                site_sizes=[s.n_train for s in data.sites], rounds=rounds, training=training,
                clients_per_round=clients_per_round, seed=seed, device=self.device,
                private_names=frozenset(strategy.private_names(self.model)),
                updates_hidden=self.protocol.hides_updates,
            )
        )
        self.sites = [
            SiteRunner(k, site, self.state, strategy, training=training, privacy=self.privacy, seed=seed,
                       device=self.device)
            for k, site in enumerate(data.sites)
        ]

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> FederationResult:
        """Train for all rounds and evaluate the final model.

        Args:
            on_round: called with each finished round's record (progress reporting).
        """
        self._events: list[str] = []
        trace = Trace(
            strategy=STRATEGIES.name_of(type(self.strategy)), protocol=self.protocol.name, update_length=self.state.numel,
            events=self._events,
        )
        global_vector = self.state.get()
        self.strategy.start(global_vector)
        roles = self._setup()
        trace.setup_bytes = roles.setup_bytes
        for round_number in range(1, self.rounds + 1):
            participants = self._sample(round_number)
            if not self.privacy.round_fits(participants):
                trace.stopped_early = True  # the next round would overspend the privacy budget
                break
            record, global_vector = self._round(round_number, participants, global_vector, roles)
            trace.rounds.append(record)
            if on_round is not None:
                on_round(record)
        trace.final_global = global_vector.detach().cpu()
        trace.privacy = self.privacy.report(rounds_completed=len(trace.rounds), stopped_early=trace.stopped_early)
        evaluation = self.evaluate(global_vector)
        if trace.rounds and trace.rounds[-1].utility is None:
            trace.rounds[-1].utility = evaluation.global_
        return FederationResult(trace=trace, evaluation=evaluation)

    def first_message(self, k: int) -> tuple[torch.Tensor, Message]:
        """What the server receives from site ``k`` in round 1, without running the round.

        The site trains from the initial global model with its privacy
        mechanism and protects the update with the protocol, exactly as in
        :meth:`run`; nothing else happens (no other site trains, no
        aggregation, no privacy spent). This is the server's view that an
        inversion audit attacks.

        Returns:
            The global model sent to the site (flat vector, on the CPU) and the site's message.
        """
        global_vector = self.state.get()
        self.strategy.start(global_vector)
        message, _ = self.sites[k].message(global_vector, 1, self._setup().client)
        return global_vector.detach().cpu(), _to_cpu(message)

    def _setup(self) -> Roles:
        # Weights are divided by the smallest site's weight, a number the sites agree on,
        # so normalized weights are >= 1 and small sites keep full fixed-point precision.
        weight_unit = min(site.weight for site in self.sites)
        return self.protocol.setup(len(self.sites), weight_unit=weight_unit)

    def _round(
        self, round_number: int, participants: list[int], global_vector: torch.Tensor, roles: Roles
    ) -> tuple[RoundRecord, torch.Tensor]:
        keep = self.keep_messages == "all" or (self.keep_messages == "first" and round_number == 1)
        messages, clients = [], []
        for k in participants:
            message, client = self.sites[k].message(global_vector, round_number, roles.client)
            messages.append(message)
            clients.append(client)

        shortfall = (quorum_shortfall(self.privacy, self.protocol, len(self.sites), len(messages), round_number)
                     if messages else None)
        if shortfall is not None:
            self._events.append(shortfall)
        if not messages or shortfall is not None:  # nobody sampled, or too few noise shares: the model stays as it is
            epsilon = self.privacy.end_round(participants)
            record = RoundRecord(round=round_number, clients=[], combine_seconds=0.0, bytes_down=0, epsilon=epsilon,
                                 global_model=global_vector.detach().cpu().clone() if self.keep_global_models else None)
            return record, global_vector
        aggregate, combine_seconds = combine_round(
            roles.server, self.privacy, messages, length=self.state.numel, seed=self.seed, round_number=round_number,
            device=self.device,
        )
        # Every site reveals the same aggregate and takes the same step; the time of one reveal is each site's cost.
        new_global, reveal_seconds = next_global(
            global_vector, aggregate, roles.client, self.strategy, self.privacy, self.device
        )

        record = RoundRecord(
            round=round_number,
            clients=[replace(c, reveal_seconds=reveal_seconds) for c in clients],
            combine_seconds=combine_seconds,
            bytes_down=aggregate.nbytes * len(self.data.sites),
            received={c.site: _to_cpu(m) for c, m in zip(clients, messages)} if keep else None,
            global_model=global_vector.detach().cpu().clone() if self.keep_global_models else None,
            epsilon=self.privacy.end_round(participants),
        )
        if self.evaluate_every and round_number % self.evaluate_every == 0:
            record.utility = self.evaluate(new_global).global_
        return record, new_global

    def _sample(self, round_number: int) -> list[int]:
        return sample_participants(self.privacy, seed=self.seed, round_number=round_number,
                                   n_sites=len(self.sites), clients_per_round=self.clients_per_round)

    def evaluate(self, global_vector: torch.Tensor) -> Evaluation:
        """Utility of the global model (with each site's private state) on the test sets.

        The global figure pools every site's predictions on its own local test
        set; the local test sets together are the whole test split. For
        strategies without private state this is the global model on the whole
        test split; for FedBN each site's personalised model is used.
        """
        return pooled_evaluation(
            [(site.site.name, site.site.n_train) for site in self.sites],
            [(site.predict(global_vector), site.test_tensors[1]) for site in self.sites],
        )


def _to_cpu(message: Message) -> Message:
    if isinstance(message.payload, torch.Tensor):
        return replace(message, payload=message.payload.detach().cpu())
    return message
