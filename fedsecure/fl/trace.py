"""What each party saw, round by round, and what it cost.

The trace is the evidence an audit attacks: the messages the server received
(its view), the global models the clients received (their view), and the
final model (what an external party gets). Keeping every message of every
round costs memory (7M parameters x sites x rounds for a DenseNet), so the
federation keeps messages of the first round only by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean

import torch

from fedsecure.fl.evaluation import Utility
from fedsecure.fl.privacy_hooks import PrivacyReport
from fedsecure.secure.protocol import Message


@dataclass(frozen=True)
class ClientRound:
    """One site's part in one round."""

    site: str
    weight: float
    steps: int
    train_seconds: float
    protect_seconds: float
    reveal_seconds: float
    bytes_up: int


@dataclass
class RoundRecord:
    """One round of the federation.

    Attributes:
        round: 1-based round number.
        clients: the sites that took part, in order.
        combine_seconds: the server's aggregation time.
        bytes_down: bytes the server sent back in total (the aggregate to every site).
        utility: global test utility after the round (None when not evaluated).
        epsilon: privacy spent after the round (None without differential privacy).
        received: the server's view: the message of each participating site
            (None when this round's messages were not kept).
        global_model: the shared state every site held at the start of the round
            (None when not kept).
    """

    round: int
    clients: list[ClientRound]
    combine_seconds: float
    bytes_down: int
    utility: Utility | None = None
    epsilon: float | None = None
    received: dict[str, Message] | None = field(default=None, repr=False)
    global_model: torch.Tensor | None = field(default=None, repr=False)

    @property
    def bytes_up(self) -> int:
        """Bytes all participating sites sent the server."""
        return sum(c.bytes_up for c in self.clients)

    @property
    def train_seconds(self) -> float:
        """Seconds the participating sites spent training, summed."""
        return sum(c.train_seconds for c in self.clients)

    @property
    def protect_seconds(self) -> float:
        """Seconds spent protecting, combining and revealing, summed over all parties."""
        return self.combine_seconds + sum(c.protect_seconds + c.reveal_seconds for c in self.clients)


@dataclass
class Trace:
    """A federation's full record.

    Attributes:
        strategy: registry name of the strategy.
        protocol: registry name of the aggregation protocol.
        rounds: one record per round, in order.
        final_global: the shared state after the last round (the released model).
        update_length: values in one update (the shared state's size).
        setup_bytes: what the key setup sent the server once (e.g. CKKS's public context).
        stopped_early: training stopped before the planned rounds because the
            next round would have overspent the privacy budget.
        privacy: the differential-privacy guarantee at the end (None without DP).
        engine: what ran the federation: "in-process", or "flower" (sites on SuperNodes).
        events: what happened beyond the plan, one line each (a site dropped, ...).
        server_reads_sum: whether the protocol lets the server read each round's sum, hence every
            global model (plaintext, SecAgg+), or not (CKKS).
        transport: on Flower, how the SuperNodes reach the SuperLink as the operator declared it
            ("tls+node-auth", "insecure", "undeclared"; "simulation" on Flower's simulation engine).
    """

    strategy: str
    protocol: str
    update_length: int = 0
    setup_bytes: int = 0
    stopped_early: bool = False
    privacy: PrivacyReport | None = None
    engine: str = "in-process"
    events: list[str] = field(default_factory=list)
    transport: str | None = None
    server_reads_sum: bool = True
    rounds: list[RoundRecord] = field(default_factory=list)
    final_global: torch.Tensor | None = field(default=None, repr=False)

    @property
    def train_seconds(self) -> float:
        """Seconds the sites spent training, summed over sites and rounds."""
        return sum(r.train_seconds for r in self.rounds)

    @property
    def encrypt_seconds(self) -> float:
        """Seconds the sites spent protecting their updates, summed over sites and rounds."""
        return sum(c.protect_seconds for r in self.rounds for c in r.clients)

    @property
    def aggregate_seconds(self) -> float:
        """Seconds the server spent combining, summed over rounds."""
        return sum(r.combine_seconds for r in self.rounds)

    @property
    def decrypt_seconds(self) -> float:
        """Seconds the sites spent revealing the aggregate, summed over sites and rounds."""
        return sum(c.reveal_seconds for r in self.rounds for c in r.clients)

    @property
    def protect_seconds(self) -> float:
        """Seconds spent protecting, combining and revealing, summed over all parties and rounds."""
        return self.encrypt_seconds + self.aggregate_seconds + self.decrypt_seconds

    @property
    def bytes_up_per_round(self) -> float:
        """Mean bytes sent by all sites to the server per round."""
        return fmean(r.bytes_up for r in self.rounds) if self.rounds else 0.0

    @property
    def bytes_per_parameter(self) -> float:
        """Mean bytes of one site's message per update value."""
        sizes = [c.bytes_up / self.update_length for r in self.rounds for c in r.clients]
        return fmean(sizes) if sizes and self.update_length else 0.0

    @property
    def bytes_down_per_round(self) -> float:
        """Mean bytes sent by the server to all sites per round."""
        return fmean(r.bytes_down for r in self.rounds) if self.rounds else 0.0
