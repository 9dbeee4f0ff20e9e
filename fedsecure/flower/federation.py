"""The server's side of a federation whose sites are Flower SuperNodes.

The round is the in-process engine's round (:mod:`fedsecure.fl.server`):
the same client sampling, the same protocol's ``combine`` on the messages that
arrived, the same central noise and privacy accounting. What differs is that
the sites are elsewhere, and the server holds no secret: it never reveals an
aggregate. It forwards each aggregate to the sites in their next message; they
reveal it, move their copy of the global model with the strategy, evaluate it
on their test split and send back counts of their predictions (score
histograms and a confusion matrix: no score or label tied to an image, though
the bins are fine enough to give each score to within its bin with the labels
in that bin), from which the server pools the exact accuracy and the AUC,
within :func:`~fedsecure.fl.evaluation.auc_error_bound` of the exact one, a
bound the run states as an event (see
:func:`~fedsecure.fl.evaluation.utility_from_histograms`).

A round whose messages are fewer than the quorum (the distributed noise's
``min_sites``; under CKKS at least 2) is not combined: the sites would refuse to
reveal it (:mod:`fedsecure.secure.quorum`), and the global model stays as it was.

A site that does not answer within ``round_timeout`` (its SuperNode died, its
ClientApp failed) is dropped: the round goes on with the messages that
arrived (the protocols' mean is over whichever sites arrived), the site takes
no further part (its copy of the global model would be stale), and the trace
says what happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import torch
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Stage
from flwr.serverapp import Grid

from fedsecure.config.parts import build_parts, image_size_of
from fedsecure.config.spec import AuditSpec, LoadedSpec, ScenarioSpec
from fedsecure.errors import FedsecureError, NotSupportedError
from fedsecure.fl.evaluation import ScoreHistograms, auc_error_bound
from fedsecure.fl.round_loop import FederationResult, RoundLoop
from fedsecure.fl.secure_exchange import masked_message
from fedsecure.fl.server import Evaluation, pooled_evaluation_from_histograms
from fedsecure.fl.strategies import STRATEGIES
from fedsecure.fl.task import TASKS
from fedsecure.fl.trace import ClientRound, RoundRecord, Trace
from fedsecure.flower import wire
from fedsecure.flower.prompt_grid import PromptGrid
from fedsecure.models import check_model_takes
from fedsecure.secure.protocol import Aggregate, RoundNotCombined
from fedsecure.secure.protocol import Message as SiteMessage
from fedsecure.secure.secagg import RecordingGrid, SecAggServer


class SiteLost(FedsecureError):
    """Every site stopped answering."""


def check_runs_on_flower(spec: AuditSpec, scenario: ScenarioSpec) -> None:
    """Refuse what the Flower engine cannot run the same way as the in-process one.

    Raises:
        NotSupportedError: a task whose utility the server cannot pool from the sites' counts
            (segmentation).
    """
    if not TASKS.get(spec.data.task).pooled_from_counts:
        raise NotSupportedError(
            f"data.task = {spec.data.task!r}: on Flower no prediction leaves a site, and the sites' counts "
            "(score histograms) pool a classifier's AUC only; run it on the in-process engine"
        )


class FlowerFederation:
    """One scenario's federation, driven from a ServerApp over a Flower ``Grid``.

    Args:
        grid: the ServerApp's grid.
        loaded: the validated spec (sent to the sites as text).
        scenario: the scenario to run.
        round_timeout: seconds to wait for the sites' answers to one message.
        connect_timeout: seconds to wait for the spec's number of SuperNodes to connect.
        on_event: called with each line of what happened (a dropped site...).
        on_reply: called with what each site's reply held, without its values
            (:func:`~fedsecure.flower.wire.describe`, plus ``kind``, ``round`` and ``site``):
            the record of what left the sites. Under SecAgg+ every stage's reply is recorded, as
            ``secagg:<stage>``.
        transport: how the SuperNodes reach the SuperLink, as the operator declared it (the report states it).

    Raises:
        NotSupportedError: see :func:`check_runs_on_flower`; or secure aggregation with one
            site per round, which the sites would never reveal.
    """

    def __init__(
        self, grid: Grid, loaded: LoadedSpec, scenario: ScenarioSpec, *, round_timeout: float = 600.0,
        connect_timeout: float = 120.0, on_event: Callable[[str], None] | None = None,
        on_reply: Callable[[dict], None] | None = None, transport: str = "undeclared",
    ) -> None:
        check_runs_on_flower(loaded.spec, scenario)
        one_per_round = loaded.spec.federation.clients_per_round == 1 and loaded.spec.data.sites >= 2
        if scenario.protocol_instance().hides_updates and one_per_round:
            raise NotSupportedError(
                f"scenario {scenario.name}: {scenario.protocol} with clients_per_round = 1: the sites refuse to "
                "decrypt an aggregate of one site's update (it would be that update), so no round could be combined"
            )
        self.grid = PromptGrid(grid)  # replies collected as they arrive, not on flwr's 3-second polls
        self.loaded = loaded
        self.spec = loaded.spec
        self.scenario = scenario
        self.round_timeout = round_timeout
        self.connect_timeout = connect_timeout
        self.on_event = on_event
        self.on_reply = on_reply
        self.transport = transport
        self.events: list[str] = []
        self.device = torch.device("cpu")  # the server only adds up messages

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> FederationResult:
        """Set the sites up, run every round, collect the final model and its evaluation."""
        spec = self.spec
        nodes = self._connected_nodes()
        sites = self._setup(nodes)
        self.nodes = [node for node, _ in sites]
        self.n_sites = len(sites)
        self.site_sizes = [int(info["n_train"]) for _, info in sites]
        self.names = [f"site-{k}" for k in range(self.n_sites)]
        self.shape = {key: max(int(info[key]) for _, info in sites) for key in ("in_channels", "n_classes")}
        axes = ("depth", "height", "width")
        spatial = {tuple(int(info.get(key, 0)) for key in axes) for _, info in sites}
        if len(spatial) != 1:
            raise FedsecureError(
                f"the sites' images differ in size ({', '.join(sorted(map(str, spatial)))}); "
                "every site needs the spec's preprocessing to one size"
            )
        self.shape.update(zip(axes, spatial.pop(), strict=True))
        if len({str(info["key_id"]) for _, info in sites}) != 1:
            raise FedsecureError("the sites hold different CKKS keys; every site needs the same ckks-secret file")
        material = bytes(sites[0][1]["material"])
        parts = build_parts(spec, self.scenario, self.shape, self.site_sizes, self.device)
        # The sites' images must fit the model before any site trains (too small a volume fails every site).
        check_model_takes(parts.state.model, self.shape["in_channels"], image_size_of(self.shape))
        self.privacy, strategy, protocol, state = parts.privacy, parts.strategy, parts.protocol, parts.state
        server = protocol.server_role(material)
        self.server = server
        self.interactive = protocol.interactive  # SecAgg+: an exchange of stages instead of one train message
        self.length = strategy.message_length(state.numel)
        self.weight_unit = min(self.privacy.site_weight(n) for n in self.site_sizes)
        trace = Trace(strategy=STRATEGIES.name_of(type(strategy)), protocol=protocol.name,
                      update_length=state.numel, setup_bytes=len(material), engine="flower", events=self.events,
                      transport=self.transport, server_reads_sum=protocol.server_reads_sum)
        server_private = state.get_private()  # as built, like the in-process server's
        self.live = set(range(self.n_sites))
        self.applied = [0] * self.n_sites
        self.aggregates: dict[int, Aggregate] = {}
        loop = RoundLoop(
            privacy=self.privacy, protocol=protocol, server=server, n_sites=self.n_sites,
            rounds=spec.federation.rounds, clients_per_round=spec.federation.clients_per_round, seed=spec.seed,
            length=strategy.message_length(state.numel), device=self.device, keep_messages="ends",
        )
        final_global, evaluation = loop.run(_FlowerSites(self, trace), trace, on_round, on_event=self.on_event)
        return FederationResult(
            trace=trace, evaluation=evaluation, released_model=state.model_with(final_global, server_private),
            protocol_parameters=protocol.describe(),
        )

    def _final(self, trace: Trace) -> tuple[torch.Tensor, Evaluation]:
        """Ask every live site for its final model and evaluation; the model they agree on."""
        final = self._send("evaluate", sorted(self.live), len(trace.rounds) + 1)
        self._take_evaluations(trace, final)
        if not final:
            raise SiteLost("no site answered the final evaluation; the final model is unknown")
        vectors = {k: wire.get_tensors(reply, "global")["vector"] for k, reply in final.items()}
        reference = next(iter(vectors.values()))
        spread = max(float((v - reference).abs().max()) for v in vectors.values())
        if spread > 0:
            self._event(f"the sites' final models differ by up to {spread:.3g} (largest absolute difference)")
        evaluation = self._evaluation(final)
        bound = auc_error_bound(self._histograms(final))
        if bound:  # zero when no two sites' images share a bin: the pooled AUC is then exact
            self._event(
                f"the final pooled AUC comes from the sites' score histograms: within {bound:.2g} of the exact value"
            )
        return reference, evaluation

    def _train(self, round_number: int, participants: list[int], trace: Trace) -> list[tuple[ClientRound, SiteMessage]]:
        replies = self._send("train", participants, round_number)
        self._take_evaluations(trace, replies)
        answered = []
        for k, reply in sorted(replies.items()):
            meta = reply.config_records["client"]
            answered.append((ClientRound(
                site=self.names[k], weight=float(meta["weight"]), steps=int(meta["steps"]),
                train_seconds=float(meta["train_seconds"]), protect_seconds=float(meta["protect_seconds"]),
                reveal_seconds=0.0, bytes_up=int(meta["bytes_up"]),
            ), wire.get_message(reply, "update")))
        return answered

    def _connected_nodes(self) -> list[int]:
        wanted, deadline = self.spec.data.sites, time.monotonic() + self.connect_timeout
        while True:
            nodes = sorted(self.grid.get_node_ids())
            if len(nodes) > wanted:  # which of them are this study's sites is not ours to guess
                raise FedsecureError(f"{len(nodes)} SuperNodes are connected but the spec has {wanted} sites")
            if len(nodes) == wanted:
                return nodes
            if time.monotonic() > deadline:
                raise FedsecureError(
                    f"only {len(nodes)} of the spec's {wanted} SuperNodes connected within {self.connect_timeout:g} s"
                )
            time.sleep(0.5)

    def _setup(self, nodes: list[int]) -> list[tuple[int, ConfigRecord]]:
        content = RecordDict({"setup": ConfigRecord({"spec": self.loaded.text, "scenario": self.scenario.name})})
        messages = [Message(content, dst_node_id=node, message_type="query") for node in nodes]
        replies = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.round_timeout):
            node = reply.metadata.src_node_id
            if reply.has_error():
                raise FedsecureError(f"SuperNode {node} failed its setup: {reply.error.reason}")
            self._record_reply("setup", 0, f"node-{node}", reply.content)
            replies[node] = reply.content.config_records["site"]
        missing = [node for node in nodes if node not in replies]
        if missing:
            raise FedsecureError(f"SuperNode(s) {missing} did not answer the setup within {self.round_timeout:g} s")
        claimed = [int(replies[node]["claimed"]) for node in nodes]
        if sorted(claimed) == list(range(len(nodes))):  # the operators numbered the sites
            order = sorted(nodes, key=lambda node: int(replies[node]["claimed"]))
        else:
            order = nodes
        return [(node, replies[node]) for node in order]

    def _send(self, kind: str, sites: list[int], round_number: int) -> dict[int, RecordDict]:
        """Send each site its message; the contents of the replies that came back, by site."""
        if not sites:
            return {}
        messages = [
            Message(self._round_content(k, round_number), dst_node_id=self.nodes[k], message_type=kind,
                    group_id=str(round_number))
            for k in sites
        ]
        by_node = {self.nodes[k]: k for k in sites}
        replies: dict[int, RecordDict] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.round_timeout):
            k = by_node.get(reply.metadata.src_node_id)
            if k is None:
                continue
            if reply.has_error():
                self._drop(k, round_number, f"its ClientApp failed: {reply.error.reason}")
                continue
            self._take_reply(kind, round_number, k, reply.content)
            replies[k] = reply.content
        for k in sites:
            if k not in replies and k in self.live:
                if kind == "train":  # it may have trained before it fell silent
                    self.privacy.account_unreported(k)
                self._drop(k, round_number, f"no answer within {self.round_timeout:g} s")
        return replies

    def _round_content(self, k: int, round_number: int) -> RecordDict:
        """What site ``k`` is sent for a round: the federation's facts and the aggregates it has not applied."""
        content = RecordDict()
        pending = [r for r in sorted(self.aggregates) if r > self.applied[k]]
        for r in pending:
            wire.put_aggregate(content, f"aggregate.{r}", self.aggregates[r])
        # "pending" [0] means none: a list on the wire needs an element to carry its type.
        content.config_records["round"] = ConfigRecord({
            "round": round_number, "site": k, "n_sites": self.n_sites, "weight_unit": float(self.weight_unit),
            "site_sizes": self.site_sizes, "pending": pending or [0], **self.shape,
        })
        return content

    def _take_reply(self, kind: str, round_number: int, k: int, content: RecordDict, record: bool = True) -> None:
        if record:
            self._record_reply(kind, round_number, self.names[k], content)
        # What a mechanism that runs at the sites reports (DP-SGD's accountant history, the adaptive bound).
        self.privacy.take_site_report(k, wire.get_tensors(content, "privacy"))
        self.applied[k] = int(content.config_records["applied"]["round"])
        for note in content.config_records["applied"]["notes"]:
            if note:
                self.privacy.note(note)  # a weakened guarantee a site noticed (e.g. too few noise shares)

    def _exchange(
        self, round_number: int, participants: list[int], trace: Trace
    ) -> list[tuple[ClientRound, SiteMessage]]:
        """An interactive protocol's round (SecAgg+): Flower's workflow stages over the grid, to the masked vectors.

        The unmask stage runs in the round loop's combine; :meth:`_after_exchange` drops the sites
        that stopped answering at any stage.
        """
        assert isinstance(self.server, SecAggServer)
        by_node = {self.nodes[k]: k for k in participants}

        def record(stage: str, node: int, content: RecordDict) -> None:
            self._record_reply(f"secagg:{stage}", round_number, self.names[by_node[node]], content)

        grid = RecordingGrid(self.grid, lambda node: self._round_content(by_node[node], round_number), record)
        self.exchange = (grid, participants)
        weights = [int(self.privacy.site_weight(self.site_sizes[k])) for k in participants]
        try:
            replies = self.server.collect(
                grid, round_number, [self.nodes[k] for k in participants], weight_unit=self.weight_unit,
                max_weight=max(weights), timeout=self.round_timeout,
            )
        except RoundNotCombined:
            # The sites that trained still spent privacy and evaluated; the silent ones are gone.
            self._take_collected(round_number, grid.replies.get(Stage.COLLECT_MASKED_VECTORS, {}), trace)
            self._drop_silent(round_number)
            raise
        contents = self._take_collected(round_number, replies, trace)
        answered = []
        for k in sorted(contents):
            content = contents[k]
            meta = content.config_records["client"]
            message = masked_message(content.config_records[RECORD_KEY_CONFIGS], self.length,
                                     self.exchange[0].bytes_up[self.nodes[k]])
            answered.append((ClientRound(
                site=self.names[k], weight=float(meta["weight"]), steps=int(meta["steps"]),
                train_seconds=float(meta["train_seconds"]), reveal_seconds=0.0, bytes_up=message.nbytes,
                protect_seconds=grid.protect_seconds.get(self.nodes[k], 0.0),  # the protocol's work, stages 0-2
            ), message))
        return answered

    def _take_collected(
        self, round_number: int, replies: dict[int, Message], trace: Trace
    ) -> dict[int, RecordDict]:
        """The masked-vector stage's replies by site, their evaluations and privacy reports taken.

        A site that was sent that stage and did not answer may have trained: its privacy
        mechanism accounts the round as spent (:meth:`~fedsecure.fl.privacy_hooks.PrivacyMechanism.account_unreported`).
        """
        grid, participants = self.exchange
        by_node = {self.nodes[k]: k for k in participants}
        contents = {by_node[node]: reply.content for node, reply in replies.items()}
        self._take_evaluations(trace, contents)
        for k, content in contents.items():
            self._take_reply("train", round_number, k, content, record=False)  # recorded as its stage
        asked = grid.replies.get(Stage.SHARE_KEYS, {})  # who finished the key exchange was sent the stage
        for k in participants:
            if self.nodes[k] in asked and k not in contents:
                self.privacy.account_unreported(k)
        return contents

    def _drop_silent(self, round_number: int) -> None:
        """Drop the sites that did not answer the last stage of the round's exchange they were sent."""
        grid, participants = self.exchange
        sent = [stage for stage in Stage.all() if stage in grid.replies]
        last = grid.replies[sent[-1]] if sent else {}
        for k in participants:
            if self.nodes[k] not in last and k in self.live:
                self._drop(k, round_number, "it stopped answering during the SecAgg+ exchange")

    def _after_exchange(self, round_number: int, record: RoundRecord) -> None:
        """Drop the sites that stopped answering during the round's exchange; count each site's bytes in full."""
        grid, participants = self.exchange
        self._drop_silent(round_number)
        nodes = {self.names[k]: self.nodes[k] for k in participants}
        record.clients = [
            replace(c, bytes_up=grid.bytes_up.get(nodes[c.site], c.bytes_up),
                    protect_seconds=grid.protect_seconds.get(nodes[c.site], c.protect_seconds))
            for c in record.clients
        ]

    def _drop(self, k: int, round_number: int, why: str) -> None:
        self.live.discard(k)
        self._event(f"round {round_number}: {self.names[k]} dropped ({why}); the round goes on with the sites "
                    "that answered, and it takes no further part")

    def _take_evaluations(self, trace: Trace, replies: dict[int, RecordDict]) -> None:
        """Attach the sites' evaluation of the model after the round they applied, and their reveal times."""
        evaluated = {
            int(r.config_records["applied"]["round"]) for r in replies.values() if "evaluation" in r.array_records
        }
        for round_number in evaluated:
            if round_number < 1 or round_number > len(trace.rounds):
                continue
            these = {k: r for k, r in replies.items() if int(r.config_records["applied"]["round"]) == round_number}
            record = trace.rounds[round_number - 1]
            record.utility = self._evaluation(these).global_
            reveal = {self.names[k]: float(r.config_records["applied"]["reveal_seconds"]) for k, r in these.items()}
            record.clients = [replace(c, reveal_seconds=reveal.get(c.site, c.reveal_seconds)) for c in record.clients]
            if len(these) < self.n_sites:
                self._event(
                    f"round {round_number}: utility measured on {len(these)} of {self.n_sites} sites' test sets"
                )

    def _evaluation(self, replies: dict[int, RecordDict]) -> Evaluation:
        evaluated = [k for k, reply in sorted(replies.items()) if "evaluation" in reply.array_records]
        sites = [(self.names[k], self.site_sizes[k]) for k in evaluated]
        return pooled_evaluation_from_histograms(sites, self._histograms(replies))

    def _histograms(self, replies: dict[int, RecordDict]) -> list[ScoreHistograms]:
        return [
            wire.get_score_histograms(reply, "evaluation", self.shape["n_classes"])
            for _, reply in sorted(replies.items()) if "evaluation" in reply.array_records
        ]

    def _record_reply(self, kind: str, round_number: int, site: str, content: RecordDict) -> None:
        if self.on_reply is not None:
            self.on_reply({"kind": kind, "round": round_number, "site": site, **wire.describe(content)})

    def _event(self, line: str) -> None:
        self.events.append(line)
        if self.on_event is not None:
            self.on_event(line)


class _FlowerSites:
    """The round loop's channel to SuperNodes: an aggregate travels to the sites with their next message.

    The server holds no secret and never sees a global model: the sites reveal
    each aggregate, move their copy and report its evaluation in their next reply.
    """

    def __init__(self, federation: FlowerFederation, trace: Trace) -> None:
        self.federation = federation
        self.trace = trace

    def reachable(self, participants: list[int]) -> list[int]:
        return [k for k in participants if k in self.federation.live]

    def global_model(self) -> torch.Tensor | None:
        return None

    def train(self, round_number: int, participants: list[int]) -> list[tuple[ClientRound, SiteMessage]]:
        if self.federation.interactive:
            return self.federation._exchange(round_number, participants, self.trace)
        return self.federation._train(round_number, participants, self.trace)

    def deliver(self, round_number: int, aggregate: Aggregate, record: RoundRecord) -> None:
        self.federation.aggregates[round_number] = aggregate
        if self.federation.interactive:
            self.federation._after_exchange(round_number, record)

    def finish(self, trace: Trace) -> tuple[torch.Tensor, Evaluation]:
        return self.federation._final(trace)
