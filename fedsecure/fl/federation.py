"""The federation: sites train locally, a protocol aggregates, the strategy moves the global model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from fedsecure.data.federated import FederatedData
from fedsecure.devices import Stopwatch
from fedsecure.errors import TrainingDivergedError
from fedsecure.fl.evaluation import Utility, predict, utility_from_predictions
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import STRATEGIES, Strategy
from fedsecure.fl.trace import ClientRound, RoundRecord, Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.privacy.mechanism import FederationFacts, PrivacyMechanism
from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import AggregationProtocol, Message, Roles
from fedsecure.seeding import numpy_rng, torch_generator

KeepMessages = Literal["none", "first", "all"]


@dataclass(frozen=True)
class SiteUtility:
    """A model's utility on one site's local test set."""

    site: str
    n_train: int
    auc: float | None
    accuracy: float
    n_test: int


@dataclass(frozen=True)
class Evaluation:
    """Utility on the whole test set and on each site's local test set."""

    global_: Utility
    per_site: list[SiteUtility]


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
        self._train = [site.train.tensors(self.device) for site in data.sites]
        self._test = [site.test.tensors(self.device) for site in data.sites]
        initial_private = self.state.get_private()
        self._private = [{k: v.clone() for k, v in initial_private.items()} for _ in data.sites]
        self.privacy.calibrate(
            FederationFacts(
                site_sizes=[s.n_train for s in data.sites], rounds=rounds, training=training,
                clients_per_round=clients_per_round, seed=seed, device=self.device,
                private_names=frozenset(strategy.private_names(self.model)),
                updates_hidden=self.protocol.hides_updates,
            )
        )
        self._trainers = [self.privacy.site_trainer(k) for k in range(n_sites)]

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> FederationResult:
        """Train for all rounds and evaluate the final model.

        Args:
            on_round: called with each finished round's record (progress reporting).
        """
        trace = Trace(
            strategy=STRATEGIES.name_of(type(self.strategy)), protocol=self.protocol.name, update_length=self.state.numel
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
        message, _ = self._site_message(k, global_vector, 1, self._setup())
        return global_vector.detach().cpu(), _to_cpu(message)

    def _setup(self) -> Roles:
        # Weights are divided by the smallest site's weight, a number the sites agree on,
        # so normalized weights are >= 1 and small sites keep full fixed-point precision.
        weight_unit = min(self.privacy.site_weight(s.n_train) for s in self.data.sites)
        return self.protocol.setup(len(self.data.sites), weight_unit=weight_unit)

    def _site_message(
        self, k: int, global_vector: torch.Tensor, round_number: int, roles: Roles
    ) -> tuple[Message, ClientRound]:
        site = self.data.sites[k]
        train_clock, protect_clock = Stopwatch(self.device), Stopwatch(self.device)
        with train_clock.measure():
            update, steps = self._local_update(k, global_vector, round_number)
        if not bool(torch.isfinite(update).all()):
            raise TrainingDivergedError(
                f"{site.name}: local training diverged in round {round_number} (its update is not finite); "
                "lower the learning rate"
            )
        update = self.privacy.before_protect(update, torch_generator(self.seed, "dp-noise", k, round_number))
        weight = self.privacy.site_weight(site.n_train)
        with protect_clock.measure():
            message = roles.client.protect(update, weight)
        client = ClientRound(site=site.name, weight=weight, steps=steps, train_seconds=train_clock.seconds,
                             protect_seconds=protect_clock.seconds, reveal_seconds=0.0, bytes_up=message.nbytes)
        return message, client

    def _round(
        self, round_number: int, participants: list[int], global_vector: torch.Tensor, roles: Roles
    ) -> tuple[RoundRecord, torch.Tensor]:
        keep = self.keep_messages == "all" or (self.keep_messages == "first" and round_number == 1)
        messages, clients = [], []
        for k in participants:
            message, client = self._site_message(k, global_vector, round_number, roles)
            messages.append(message)
            clients.append(client)

        if not messages:  # nobody was sampled: the global model stays as it is
            epsilon = self.privacy.end_round(participants)
            record = RoundRecord(round=round_number, clients=[], combine_seconds=0.0, bytes_down=0, epsilon=epsilon,
                                 global_model=global_vector.detach().cpu().clone() if self.keep_global_models else None)
            return record, global_vector
        combine_clock = Stopwatch(self.device)
        with combine_clock.measure():
            aggregate = roles.server.combine(messages)
            noise = self.privacy.central_noise(self.state.numel, torch_generator(self.seed, "dp-central", round_number))
            if noise is not None:
                aggregate = roles.server.perturb(aggregate, noise)
        # Every site reveals the same aggregate; the time of one reveal is each site's cost.
        reveal_clock = Stopwatch(self.device)
        with reveal_clock.measure():
            mean_update = self.privacy.after_reveal(roles.client.reveal(aggregate), aggregate.n_messages)
        new_global = self.strategy.server_update(global_vector, mean_update.to(self.device))

        record = RoundRecord(
            round=round_number,
            clients=[replace(c, reveal_seconds=reveal_clock.seconds) for c in clients],
            combine_seconds=combine_clock.seconds,
            bytes_down=aggregate.nbytes * len(self.data.sites),
            received={c.site: _to_cpu(m) for c, m in zip(clients, messages)} if keep else None,
            global_model=global_vector.detach().cpu().clone() if self.keep_global_models else None,
            epsilon=self.privacy.end_round(participants),
        )
        if self.evaluate_every and round_number % self.evaluate_every == 0:
            record.utility = self.evaluate(new_global).global_
        return record, new_global

    def _local_update(self, k: int, global_vector: torch.Tensor, round_number: int) -> tuple[torch.Tensor, int]:
        generator = torch_generator(self.seed, "train", k, round_number)
        trainer = self._trainers[k]
        if trainer is not None:  # e.g. DP-SGD on the site's own copy of the model
            update, steps, self._private[k] = trainer(global_vector, self._private[k], *self._train[k], generator)
            return update, steps
        self.state.set(global_vector)
        self.state.set_private(self._private[k])
        update, steps = self.strategy.client_update(self.state, *self._train[k], self.training, generator)
        self._private[k] = self.state.get_private()
        return update, steps

    def _sample(self, round_number: int) -> list[int]:
        n_sites = len(self.data.sites)
        chosen = self.privacy.sample_clients(round_number, n_sites, numpy_rng(self.seed, "dp-sampling", round_number))
        if chosen is not None:
            return chosen
        if self.clients_per_round is None or self.clients_per_round == n_sites:
            return list(range(n_sites))
        chosen = numpy_rng(self.seed, "sampling", round_number).choice(n_sites, self.clients_per_round, replace=False)
        return sorted(int(k) for k in chosen)

    def evaluate(self, global_vector: torch.Tensor) -> Evaluation:
        """Utility of the global model (with each site's private state) on the test sets.

        The global figure pools every site's predictions on its own local test
        set; the local test sets together are the whole test split. For
        strategies without private state this is the global model on the whole
        test split; for FedBN each site's personalised model is used.
        """
        self.state.set(global_vector)
        probabilities, labels, per_site = [], [], []
        for k, site in enumerate(self.data.sites):
            self.state.set_private(self._private[k])
            images, site_labels = self._test[k]
            site_probabilities = predict(self.model, images)
            probabilities.append(site_probabilities)
            labels.append(site_labels)
            utility = utility_from_predictions(site_probabilities, site_labels)
            per_site.append(SiteUtility(site.name, site.n_train, utility.auc, utility.accuracy, utility.n))
        return Evaluation(global_=utility_from_predictions(torch.cat(probabilities), torch.cat(labels)), per_site=per_site)


def _to_cpu(message: Message) -> Message:
    if isinstance(message.payload, torch.Tensor):
        return replace(message, payload=message.payload.detach().cpu())
    return message
