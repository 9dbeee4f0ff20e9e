"""SecAgg+ masking secure aggregation: Flower's own protocol, with fedsecure's mask generator.

The protocol is Flower's (flwr 1.42): the server runs the four stages of
``SecAggPlusWorkflow`` (setup, share keys, collect masked vectors, unmask)
and every site answers them with Flower's ``secaggplus_mod``
(:mod:`fedsecure.secure.secagg_site`). fedsecure changes one thing, the
generator that expands a seed into a mask (:mod:`fedsecure.secure.secagg_masks`):
Flower's folds each seed to 32 bits.

What each party holds, for a server that follows the protocol:

* A site quantizes ``(w / max_w) * update`` (its weight over the round's
  largest) to integers in ``[0, 2^quantization_bits)`` after clipping each
  value to ``[-clipping_range, clipping_range]``, and adds a private mask (from
  a fresh 256-bit seed) and one pairwise mask per neighbour (from an ECDH
  key), modulo ``2^modulus_bits``. Each masked vector is uniform to the server.
* The server adds the masked vectors; to remove the masks it needs, for every
  site that sent, ``threshold`` shares of its private seed and, for every
  neighbour that dropped out after the key exchange, ``threshold`` shares of
  its ECDH key. It learns the weighted sum of the sites that sent (never
  fewer than ``threshold``), and each site's weight.
* The server together with fewer than ``threshold`` sites learns nothing more:
  recovering a site's pairwise masks needs ``threshold`` shares of its key, and
  honest sites hand the server key shares only of sites it says dropped out.

What it does not stop (stated in the report): the server relays the sites'
public keys unsigned, so a server that substitutes its own keys (an active
attacker) reads every update; so does a server that claims a site both sent
and dropped out to different neighbours unless ``threshold`` is more than
half the shares (fedsecure requires it). The guarantee is against an
honest-but-curious server.

The sites receive the server's weighted mean as the plain protocol's
aggregate (fixed-point sums), so the next global model is the plain one's
within :meth:`SecAggPlusAggregation.error_bound`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.app import Message as FlowerMessage
from flwr.common import FitIns, Parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import SecAggPlusWorkflow, WorkflowState
from flwr.supercore.task_identity import TaskIdentity
from typing_extensions import override

from fedsecure.errors import FedsecureError
from fedsecure.secure import secagg_masks
from fedsecure.secure.fixed_point import to_grid
from fedsecure.secure.plain import FLOAT32_BYTES, PlainClient
from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, Message, RoundNotCombined, ServerRole
from fedsecure.secure.secagg_site import COST_RECORD, quiet_flower_log

INT64_BYTES = 8  # Flower sends masked values as int64 arrays (numpy's .npy format)


class SecAggParametersError(FedsecureError):
    """SecAgg+ settings that cannot run, or that would weaken its guarantee."""


@PROTOCOLS.register("secagg")
@dataclass(frozen=True)
class SecAggPlusAggregation(AggregationProtocol):
    """Masking secure aggregation (SecAgg+), as Flower implements it, with cryptographic mask expansion.

    Args:
        shares: how many sites (itself included) each site splits its secrets among; None: every
            site of the round (SecAgg's complete graph). Odd, at least 3, when set.
        threshold: shares needed to rebuild a secret: the server with fewer than this many sites
            learns only the sum, and a round survives until fewer than this many sites remain.
            None: a majority of the shares. Must be more than half the shares.
        clipping_range: each weighted value is clipped to ``[-clipping_range, clipping_range]``
            before quantization (a value beyond it is changed: keep it above the updates' range).
        quantization_bits: values are quantized to ``2^quantization_bits`` levels over that range.
        modulus_bits: masks and sums are taken modulo ``2^modulus_bits`` (at most 32).
    """

    shares: int | None = None
    threshold: int | None = None
    clipping_range: float = 8.0
    quantization_bits: int = 22
    modulus_bits: int = 32

    name = "secagg"
    hides_updates = True
    interactive: ClassVar[bool] = True
    message_form = "masked"

    def __post_init__(self) -> None:
        if self.shares is not None and (self.shares < 3 or self.shares % 2 == 0):
            raise SecAggParametersError(
                f"secagg shares = {self.shares}: an odd number >= 3 (each site's neighbours on both sides and itself), "
                "or leave it unset for every site of the round"
            )
        if self.threshold is not None and self.threshold < 2:
            raise SecAggParametersError(f"secagg threshold = {self.threshold}: at least 2")
        if self.shares is not None and self.threshold is not None and 2 * self.threshold <= self.shares:
            raise SecAggParametersError(
                f"secagg threshold = {self.threshold} of {self.shares} shares: it must be more than half the shares, "
                "or a server could collect both kinds of a site's shares and read its update"
            )
        if self.shares is not None and self.threshold is not None and self.threshold >= self.shares:
            raise SecAggParametersError(
                f"secagg threshold = {self.threshold} needs fewer than its {self.shares} shares (Flower's rule)"
            )
        if not math.isfinite(self.clipping_range) or self.clipping_range <= 0:
            raise SecAggParametersError(f"secagg clipping_range = {self.clipping_range}: a positive number")
        if not 8 <= self.quantization_bits <= 30:
            raise SecAggParametersError(f"secagg quantization_bits = {self.quantization_bits}: between 8 and 30")
        if not self.quantization_bits < self.modulus_bits <= 32:
            raise SecAggParametersError(
                f"secagg modulus_bits = {self.modulus_bits}: more than quantization_bits ({self.quantization_bits}) "
                "and at most 32"
            )

    @property
    def quantization_range(self) -> int:
        """Quantization levels."""
        return 2**self.quantization_bits

    @property
    def modulus_range(self) -> int:
        """The modulus of masks and sums."""
        return 2**self.modulus_bits

    @override
    def check_federation(self, n_sites: int, per_round: int | None) -> None:
        round_size = per_round or n_sites
        shares, threshold = self.round_shares(round_size)
        if round_size < 2:
            raise SecAggParametersError("SecAgg+ sums the updates of at least 2 sites a round")
        if 2 * threshold <= shares:
            raise SecAggParametersError(
                f"secagg threshold = {threshold} of {shares} shares a round: it must be more than half the shares, or "
                "a server could collect both kinds of a site's shares and read its update"
            )
        if threshold > round_size:
            raise SecAggParametersError(
                f"secagg threshold = {threshold} needs at least {threshold} sites a round, and a round has "
                f"{round_size}: no round could be unmasked"
            )
        if round_size > self.most_sites():
            raise SecAggParametersError(
                f"{round_size} sites in one SecAgg+ sum overflow 2^{self.modulus_bits} with "
                f"{self.quantization_bits}-bit values (at most {self.most_sites()}); lower quantization_bits"
            )

    def round_shares(self, n_sites: int) -> tuple[int, int]:
        """The (shares, threshold) of a round that starts with ``n_sites`` sites."""
        shares = n_sites if self.shares is None else min(self.shares, n_sites)
        threshold = self.threshold if self.threshold is not None else shares // 2 + 1
        return shares, max(threshold, 2)

    def most_sites(self) -> int:
        """The most sites one sum can hold before the quantized values overflow the modulus."""
        return self.modulus_range // self.quantization_range - 1

    def error_bound(self, weights: list[int]) -> float:
        """The largest difference, per value, between the unmasked mean and the exact weighted mean.

        Each site's quantized value is off by less than one step ``2c / 2^q`` (stochastic rounding);
        its weight ``w / max_w`` is rounded to ``2^q`` steps, which moves a value of magnitude at most
        ``c`` by less than ``c / 2^q`` each. Dividing by the quantized weight total ``sum(q_i)``:
        ``3 c n / sum(q_i)``. Values beyond the clipping range are clipped and not covered.

        Args:
            weights: the weights of the sites in the sum.
        """
        levels = self.quantization_range
        largest = max(weights)
        quantized = sum(round(w / largest * levels) for w in weights)
        return 3 * self.clipping_range * len(weights) / quantized

    @override
    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shares": self.shares,
            "threshold": self.threshold,
            "clipping_range": self.clipping_range,
            "quantization_bits": self.quantization_bits,
            "modulus_bits": self.modulus_bits,
            "mask_generator": secagg_masks.MASK_GENERATOR,
            "implementation": "flwr 1.42 SecAggPlusWorkflow + secaggplus_mod",
        }

    @override
    def client_role(self, secret: bytes, *, n_clients: int, weight_unit: float) -> SecAggClient:
        return SecAggClient(self, weight_unit)

    @override
    def server_role(self, material: bytes) -> SecAggServer:
        if material:
            raise SecAggParametersError("SecAgg+ has no key material for the server: its keys are agreed per round")
        return SecAggServer(self)


class SecAggClient(PlainClient):
    """A site under SecAgg+: it reveals the server's mean as the plain protocol's aggregate.

    Its :meth:`protect` stands for what one site's message is to a server that holds
    nothing else: its quantized update under a fresh uniform mask. In a round the masks
    come out of the exchange (:mod:`fedsecure.secure.secagg_site`), and the engines
    record the masked vectors the server actually received.
    """

    def __init__(self, protocol: SecAggPlusAggregation, weight_unit: float) -> None:
        super().__init__(weight_unit)
        self.protocol = protocol

    @override
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        values = update.detach().cpu().double().numpy().reshape(-1)
        quantized = quantize([values], self.protocol.clipping_range, self.protocol.quantization_range)[0]
        mask = secagg_masks.expand_mask(os.urandom(32), self.protocol.modulus_range, [quantized.shape])[0]
        masked = (quantized.astype(np.int64) + mask) % self.protocol.modulus_range
        return Message(payload=masked, weight=None, nbytes=masked.size * INT64_BYTES, plaintext=False,
                       length=update.numel())


@dataclass
class _Proxy:
    node_id: int


@dataclass
class _RoundContext:
    """What Flower's workflow reads of a round (its ``LegacyContext``): the round, the sites, and where the sum goes.

    The workflow asks a legacy strategy for the sites (``configure_fit``) and hands it the
    unmasked mean (``aggregate_fit``); here both are this object.
    """

    round_number: int
    nodes: list[int]
    state: RecordDict = field(default_factory=RecordDict)
    aggregate: list[np.ndarray] | None = None
    weights: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({WorkflowKey.CURRENT_ROUND: self.round_number})
        self.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()

    @property
    def strategy(self) -> _RoundContext:
        return self

    @property
    def client_manager(self) -> _RoundContext:
        return self

    def num_available(self) -> int:
        return len(self.nodes)

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager: Any) -> list:
        return [(_Proxy(node), FitIns(Parameters(tensors=[], tensor_type=""), {})) for node in self.nodes]

    def aggregate_fit(self, server_round: int, results: list, failures: list) -> tuple[None, dict]:
        self.weights = {proxy.node_id: int(fitres.num_examples) for proxy, fitres in results}
        self.aggregate = parameters_to_ndarrays(results[0][1].parameters) if results else None
        return None, {}  # the server's model moves at the sites (fedsecure's strategies), not here


class RecordingGrid:
    """A Flower ``Grid`` seen through one SecAgg+ round: it keeps every reply, by stage and site.

    It also adds each site's fedsecure content to the masked-vector stage's messages (the
    stage at which a site trains).

    Args:
        grid: the Flower grid (the ServerApp's, or :class:`~fedsecure.secure.secagg_site.LocalGrid`).
        content_for: each site's fedsecure content for the stage that trains (the round, the aggregates to apply).
        on_reply: called with each reply's stage, node and content (the record of what left the sites).
    """

    def __init__(
        self, grid: Any, content_for: Callable[[int], RecordDict] | None = None,
        on_reply: Callable[[str, int, RecordDict], None] | None = None,
    ) -> None:
        self.grid = grid
        self.content_for = content_for
        self.on_reply = on_reply
        self.replies: dict[str, dict[int, FlowerMessage]] = {}
        self.bytes_up: dict[int, int] = {}
        self.protect_seconds: dict[int, float] = {}

    def send_and_receive(self, messages: list[FlowerMessage], *, timeout: float | None = None) -> list[FlowerMessage]:
        """Send one stage's messages through the grid; the replies that came back."""
        stage = str(messages[0].content.config_records[RECORD_KEY_CONFIGS][Key.STAGE]) if messages else ""
        if stage == Stage.COLLECT_MASKED_VECTORS and self.content_for is not None:
            for message in messages:
                extra = self.content_for(message.metadata.dst_node_id)
                for key, record in extra.items():
                    message.content[key] = record
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        kept = self.replies.setdefault(stage, {})
        for reply in replies:
            if reply.has_error():
                continue
            node = reply.metadata.src_node_id
            kept[node] = reply
            if self.on_reply is not None:
                self.on_reply(stage, node, reply.content)
            self.bytes_up[node] = self.bytes_up.get(node, 0) + _config_bytes(reply.content)
            cost = reply.content.config_records.get(COST_RECORD)
            self.protect_seconds[node] = self.protect_seconds.get(node, 0.0) + float(cost["seconds"] if cost else 0.0)
        return replies


def _config_bytes(content: RecordDict) -> int:
    """Bytes of the SecAgg+ values a reply carries (keys, encrypted shares, masked vectors)."""
    total = 0
    for value in content.config_records.get(RECORD_KEY_CONFIGS, ConfigRecord()).values():
        for item in value if isinstance(value, list) else [value]:
            total += len(item) if isinstance(item, bytes) else 8
    return total


@contextlib.contextmanager
def flower_identity() -> Iterator[None]:
    """Flower's task identity where no Flower process set one (the in-process engine), with Flower's log quiet.

    Flower's messages need a task identity. Its workflow and client mod log every stage, which
    would bury an audit's progress; what goes wrong reaches fedsecure's own events.
    """
    saved: tuple[int | None, int | None, int | None] = (  # Flower keeps the identity as class state
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
    )
    if saved[0] is None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 0, 0, 0
    try:
        with quiet_flower_log():
            yield
    finally:
        # Back to unset where it was (None, which the metaclass property types as int).
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved  # type: ignore[assignment]


def _forget_sites_that_shared_no_keys(state: WorkflowState) -> None:
    """Take the sites that left before sharing their keys out of the round, as if never sampled.

    Flower's unmask stage counts every sampled site that sent no masked vector as a dropout
    whose pairwise masks must be removed, and asks its neighbours for shares of its key. A site
    that left at setup or while sharing keys gave its neighbours no shares, and nobody masked
    with it, so every neighbour would fail to answer (flwr 1.42: a KeyError in the client mod)
    and no round with such a dropout could be combined. Nothing needs removing for it.
    """
    stayed = set(state.active_node_ids)
    state.sampled_node_ids = stayed
    state.nid_to_neighbours = {
        node: neighbours & stayed for node, neighbours in state.nid_to_neighbours.items() if node in stayed
    }


@dataclass
class _OpenRound:
    workflow: SecAggPlusWorkflow
    context: _RoundContext
    state: WorkflowState
    grid: RecordingGrid
    weight_unit: float


class SecAggServer(ServerRole):
    """The server's side of SecAgg+: it drives Flower's workflow over a grid, and holds no site's secret.

    A round opens with :meth:`collect` (setup, key sharing, masked vectors) and closes with
    :meth:`combine` (unmask), so the round loop's combine is where the server asks the sites
    for the shares that remove the masks.
    """

    def __init__(self, protocol: SecAggPlusAggregation) -> None:
        self.protocol = protocol
        self._open: _OpenRound | None = None
        self.error_bounds: list[float] = []

    def collect(
        self, grid: RecordingGrid, round_number: int, nodes: list[int], *, weight_unit: float, max_weight: int,
        timeout: float | None = None,
    ) -> dict[int, FlowerMessage]:
        """Stages 0 to 2 of a round among ``nodes``: the masked-vector replies, by node.

        Raises:
            RoundNotCombined: fewer sites than the threshold stayed through the key exchange.
        """
        secagg_masks.require_installed()
        protocol = self.protocol
        shares, threshold = protocol.round_shares(len(nodes))
        if len(nodes) > protocol.most_sites():
            raise SecAggParametersError(
                f"{len(nodes)} sites in one SecAgg+ sum overflow 2^{protocol.modulus_bits} with "
                f"{protocol.quantization_bits}-bit values; lower quantization_bits"
            )
        if len(nodes) < threshold:
            raise RoundNotCombined(
                f"round {round_number}: {len(nodes)} site(s) sampled, fewer than the SecAgg+ threshold of {threshold}"
            )
        workflow = SecAggPlusWorkflow(
            num_shares=1.0 if shares == len(nodes) else shares, reconstruction_threshold=threshold,
            max_weight=float(max_weight), clipping_range=protocol.clipping_range,
            quantization_range=protocol.quantization_range, modulus_range=protocol.modulus_range, timeout=timeout,
        )
        context, state = _RoundContext(round_number, list(nodes)), WorkflowState()
        with flower_identity():
            for stage in (workflow.setup_stage, workflow.share_keys_stage, workflow.collect_masked_vectors_stage):
                if not stage(grid, context, state):  # type: ignore[arg-type]  # the duck-typed LegacyContext
                    raise RoundNotCombined(
                        f"round {round_number}: fewer than {threshold} sites (the SecAgg+ threshold) stayed through "
                        "the key exchange; the round was not combined"
                    )
                if stage == workflow.share_keys_stage:
                    _forget_sites_that_shared_no_keys(state)
        self._open = _OpenRound(workflow, context, state, grid, weight_unit)
        return dict(grid.replies.get(Stage.COLLECT_MASKED_VECTORS, {}))

    @override
    def combine(self, messages: list[Message]) -> Aggregate:
        """Stage 3: the surviving sites' shares remove the masks; the weighted mean, as fixed-point sums.

        Raises:
            RoundNotCombined: no round is open, or fewer than the threshold of shares came back.
        """
        opened, self._open = self._open, None
        if opened is None:
            raise RoundNotCombined("SecAgg+ combines only the masked vectors of a round it collected")
        with flower_identity():
            done = opened.workflow.unmask_stage(opened.grid, opened.context, opened.state)  # type: ignore[arg-type]
        context = opened.context
        if not done or context.aggregate is None:
            raise RoundNotCombined(
                f"round {context.round_number}: too few sites sent their shares to remove the masks "
                "(the SecAgg+ threshold); the round was not combined"
            )
        mean = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in context.aggregate])
        weights = list(context.weights.values())
        self.error_bounds.append(self.protocol.error_bound(weights))
        total_weight = sum(weights) / opened.weight_unit
        payload = to_grid(mean * total_weight)
        return Aggregate(
            payload=payload, weight=int(to_grid(np.array(total_weight))),
            nbytes=payload.size * FLOAT32_BYTES + FLOAT32_BYTES, n_messages=len(weights), length=payload.size,
        )

    @override
    def perturb(self, aggregate: Aggregate, noise: torch.Tensor) -> Aggregate:
        # The server holds the unmasked sum, so it can add central noise as the plain server does.
        return replace(aggregate, payload=aggregate.payload + to_grid(noise.cpu().double().numpy()))
