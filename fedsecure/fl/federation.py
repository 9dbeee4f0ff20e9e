"""The federation: sites train locally, a protocol aggregates, the strategy moves the global model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from fedsecure.data.federated import FederatedData
from fedsecure.fl.canary_clients import CanaryClient
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.round_loop import (
    FederationResult,
    KeepMessages,
    RoundLoop,
    federation_facts,
    message_on_cpu,
)
from fedsecure.fl.secure_exchange import exchange_in_process, node_of
from fedsecure.fl.server import Evaluation, SiteUtility, combine_round, participation_share, pooled_evaluation
from fedsecure.fl.site import SiteRunner, next_global
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import STRATEGIES, Strategy
from fedsecure.fl.trace import ClientRound, RoundRecord, Trace
from fedsecure.fl.training import LocalTraining
from fedsecure.fl.views import ClientView, Recipe, RevealedRound, ServerView, server_round
from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import Aggregate, AggregationProtocol, Message, Roles
from fedsecure.secure.secagg import RecordingGrid, SecAggServer

__all__ = ["Evaluation", "Federation", "FederationResult", "SiteUtility"]


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
        canary_updates: one row per canary client (:mod:`fedsecure.fl.canary_clients`),
            the update it sends every round; they take part after the sites, each
            declaring the median site size. None: no canary clients.

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
        canary_updates: torch.Tensor | None = None,
    ) -> None:
        n_canaries = 0 if canary_updates is None else len(canary_updates)
        n_sites = len(data.sites) + n_canaries
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        if clients_per_round is not None and not 1 <= clients_per_round <= n_sites:
            raise ValueError(f"clients_per_round must be in [1, {n_sites}], got {clients_per_round}")
        if n_canaries and protocol is not None and protocol.interactive:
            raise ValueError(f"canary clients send fixed updates in plaintext sums, not through {protocol.name}")
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
        # The server's own values of the private entries (FedBN's normalization layers), which never leave a site:
        # what the model it sends and the model it releases carry.
        self.server_private = self.state.get_private()
        site_sizes = [s.n_train for s in data.sites]
        canary_size = sorted(site_sizes)[len(site_sizes) // 2]
        self.privacy.calibrate(federation_facts(
            site_sizes=site_sizes + [canary_size] * n_canaries, rounds=rounds, training=training,
            clients_per_round=clients_per_round, seed=seed, device=self.device,
            private_names=strategy.private_names(self.model), protocol=self.protocol,
            full_batch=strategy.one_full_batch_step,
        ))
        self.sites = [
            SiteRunner(k, site, self.state, strategy, training=training, privacy=self.privacy, seed=seed,
                       device=self.device)
            for k, site in enumerate(data.sites)
        ]
        self.canaries = [
            CanaryClient(len(self.sites) + i, update.to(self.device), canary_size, self.privacy, seed)
            for i, update in enumerate(canary_updates if canary_updates is not None else [])
        ]

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> FederationResult:
        """Train for all rounds and evaluate the final model.

        Args:
            on_round: called with each finished round's record (progress reporting).
        """
        trace = Trace(
            strategy=STRATEGIES.name_of(type(self.strategy)),
            protocol=self.protocol.name,
            update_length=self.state.numel,
            server_reads_sum=self.protocol.server_reads_sum,
        )
        global_vector = self.state.get()
        self.strategy.start(global_vector, self.participation)
        roles = self._setup()
        trace.setup_bytes = roles.setup_bytes
        loop = RoundLoop(
            privacy=self.privacy, protocol=self.protocol, server=roles.server,
            n_sites=len(self.sites) + len(self.canaries),
            rounds=self.rounds, clients_per_round=self.clients_per_round, seed=self.seed,
            length=self.strategy.message_length(self.state.numel),
            device=self.device, keep_messages=self.keep_messages,
        )
        final_global, evaluation = loop.run(_InProcessSites(self, global_vector, roles), trace, on_round)
        return FederationResult(
            trace=trace, evaluation=evaluation, released_model=self.state.model_with(final_global, self.server_private),
            protocol_parameters=self.protocol.describe(),
        )

    def _probe_start(self, start: torch.Tensor | None) -> torch.Tensor:
        """The global state a probe round starts from: ``start`` (a kept round's), or the initial model's."""
        global_vector = self.state.get() if start is None else start.to(self.device)
        self.strategy.start(global_vector, self.participation)
        return global_vector

    def server_probe_view(self, k: int, start: torch.Tensor | None = None, round_number: int = 1) -> ServerView:
        """The server's view of one round in which site ``k``'s message is the only one, without running the round.

        The site trains from ``start`` (the initial model when None) with its privacy mechanism
        and protects the update with the protocol, exactly as in :meth:`run`; nothing else
        happens (no other site trains, no aggregation, no privacy spent). This is what a
        server-position inversion audit attacks.
        """
        global_vector = self._probe_start(start)
        message, _ = self.sites[k].message(global_vector, round_number, self._setup().client)
        received = {self.sites[k].site.name: message_on_cpu(message)}
        return ServerView(
            [server_round(round_number, global_vector.detach().cpu(), received, self.state, self.server_private,
                          reads_sum=self.protocol.server_reads_sum)],
            self.recipe,
            reads_sum=self.protocol.server_reads_sum,
        )

    def client_probe_view(self, observer: int, start: torch.Tensor | None = None, round_number: int = 1) -> ClientView:
        """Site ``observer``'s view of one round in which every site takes part: what it sent and what it read.

        Every site trains from ``start`` (the initial model when None) and sends through the
        privacy mechanism and the protocol as in :meth:`run`; the server combines the messages
        (with its central noise, if any) and the observer reveals the aggregate's sums, as a
        site does. The observer's view holds its own message and the revealed sums, never
        another site's message. No privacy is spent and no model moves.
        """
        global_vector = self._probe_start(start)
        roles = self._setup()
        messages = [message for _, message in self._messages(
            global_vector, round_number, list(range(len(self.sites))), roles
        )[0]]
        sent = self.sites[observer].last_sent if 0 <= observer < len(self.sites) else None
        assert sent is not None, f"no site {observer} in this federation"
        aggregate, _ = combine_round(
            roles.server, self.privacy, messages, length=self.strategy.message_length(self.state.numel), seed=self.seed,
            round_number=round_number,
            device=self.device,
        )
        total, total_weight = roles.client.reveal_sum(aggregate)
        own_weight = self.sites[observer].weight / self._weight_unit()
        revealed = RevealedRound(round_number, sent.detach().cpu(), own_weight, total, total_weight, len(messages))
        start_state = global_vector.detach().cpu().clone()
        return ClientView(
            self.sites[observer].site.name, [start_state], self.state.model_with(start_state, self.server_private),
            [revealed], self.recipe, frozenset(self.strategy.private_names(self.model)),
        )

    @property
    def participation(self) -> float:
        """The expected share of the federation's clients in a round."""
        return participation_share(self.clients_per_round, len(self.sites) + len(self.canaries))

    @property
    def recipe(self) -> Recipe:
        """The local training the server set for every site."""
        return Recipe(self.training, self.strategy.one_full_batch_step)

    def _weight_unit(self) -> float:
        # Weights are divided by the smallest site's weight, a number the sites agree on,
        # so normalized weights are >= 1 and small sites keep full fixed-point precision.
        return min(participant.weight for participant in [*self.sites, *self.canaries])

    def _messages(
        self, global_vector: torch.Tensor, round_number: int, participants: list[int], roles: Roles
    ) -> tuple[list[tuple[ClientRound, Message]], RecordingGrid | None]:
        """The participants' messages of a round, and for an interactive protocol the grid its exchange ran on."""
        if isinstance(roles.server, SecAggServer):
            return exchange_in_process(
                roles.server, self.sites, participants, global_vector, round_number, roles.client,
                weight_unit=self._weight_unit(), seed=self.seed, length=self.strategy.message_length(self.state.numel),
            )
        answered = []
        for k in participants:
            if k < len(self.sites):
                message, client = self.sites[k].message(global_vector, round_number, roles.client)
            else:
                message, client = self.canaries[k - len(self.sites)].message(round_number, roles.client)
            answered.append((client, message))
        return answered, None

    def _setup(self) -> Roles:
        return self.protocol.setup(len(self.sites) + len(self.canaries), weight_unit=self._weight_unit())

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
            self.training.objective,
        )



class _InProcessSites:
    """The round loop's channel to sites that run in this process: they reveal and apply each aggregate at once."""

    def __init__(self, federation: Federation, global_vector: torch.Tensor, roles: Roles) -> None:
        self.federation = federation
        self.global_vector = global_vector
        self.roles = roles
        self.client = roles.client
        self.grid: RecordingGrid | None = None

    def reachable(self, participants: list[int]) -> list[int]:
        return participants

    def global_model(self) -> torch.Tensor | None:
        return self.global_vector.detach().cpu().clone() if self.federation.keep_global_models else None

    def train(self, round_number: int, participants: list[int]) -> list[tuple[ClientRound, Message]]:
        answered, self.grid = self.federation._messages(self.global_vector, round_number, participants, self.roles)
        return answered

    def deliver(self, round_number: int, aggregate: Aggregate, record: RoundRecord) -> None:
        federation = self.federation
        # Every site reveals the same aggregate and takes the same step; the time of one reveal is each site's cost.
        self.global_vector, reveal_seconds = next_global(
            self.global_vector, aggregate, self.client, federation.strategy, federation.privacy, federation.device
        )
        record.clients = [replace(c, reveal_seconds=reveal_seconds) for c in record.clients]
        if self.grid is not None:  # an interactive protocol: a site's bytes and seconds include its unmask stage
            grid = self.grid
            nodes = {site.site.name: node_of(site.index) for site in federation.sites}
            record.clients = [
                replace(c, bytes_up=grid.bytes_up.get(nodes[c.site], c.bytes_up),
                        protect_seconds=grid.protect_seconds.get(nodes[c.site], c.protect_seconds))
                for c in record.clients
            ]
        if federation.evaluate_every and round_number % federation.evaluate_every == 0:
            record.utility = federation.evaluate(self.global_vector).global_

    def finish(self, trace: Trace) -> tuple[torch.Tensor, Evaluation]:
        return self.global_vector.detach().cpu(), self.federation.evaluate(self.global_vector)
