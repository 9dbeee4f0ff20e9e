"""The privacy-hook interface: how a privacy mechanism wraps a federation, without forking it.

The federated engine owns this interface; ``fedsecure.privacy`` implements it
(sample-level DP-SGD, client-level DP-FedAvg), so the engine never imports the
implementations.

A mechanism hooks into the places where privacy is decided: the model (made
DP-compatible), a site's local training (sample-level DP-SGD), a site's
update before it is protected (client-level clipping and distributed noise),
the aggregate (central noise), client sampling, and the budget before each
round. Every hook defaults to "do nothing", so any mechanism composes with any
strategy and any aggregation protocol.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from fedsecure.fl.training import GradientCorrection, LocalTraining, plain_loop


@dataclass(frozen=True)
class PartyGuarantee:
    """The guarantee against one party.

    Attributes:
        party: "public", "server" or "site".
        epsilon: the epsilon at the mechanism's delta; None where the party
            sees the data before any noise (no differential privacy against it).
        noise_multiplier: the noise it faces per round, in units of the
            sensitivity (after subtracting what it knows of the noise).
        sample_rate: the amplification claimed (1.0: none).
        steps: the compositions counted (rounds, or DP-SGD steps).
        accounting: how epsilon was composed ("rdp", "prv", or "rdp-gated").
        sees: what this party sees, in words.
        assumptions: what the guarantee rests on, in words.
    """

    party: str
    epsilon: float | None
    noise_multiplier: float | None
    sample_rate: float
    steps: int
    accounting: str
    sees: str
    assumptions: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class FederationFacts:
    """What a mechanism needs to know to calibrate itself.

    ``updates_hidden`` says whether the protocol hides each site's update from
    the server (secure aggregation) or shows it in the clear.
    """

    site_sizes: list[int]
    rounds: int
    training: LocalTraining
    clients_per_round: int | None
    seed: int
    device: torch.device
    private_names: frozenset[str] = frozenset()
    updates_hidden: bool = False
    full_batch: bool = False
    """The strategy's local work is one step on the whole local data (FedSGD), not epochs of mini-batches."""


class LocalLoop(Protocol):
    """The optimizer loop a site's local training runs (plain SGD, or a privacy mechanism's DP-SGD).

    The strategy decides what local training is (its gradient correction, one full-batch step or
    epochs of mini-batches, what the site sends); the loop decides how each step's gradient is
    taken, so that every strategy composes with every mechanism.
    """

    def __call__(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, training: LocalTraining,
        generator: torch.Generator, correction: GradientCorrection | None, full_batch: bool,
    ) -> int:
        """Train ``model`` in place (it holds the global model and the site's private state); the steps taken."""
        ...


@dataclass
class PrivacyReport:
    """The formal guarantee as it stands (the report's ``privacy`` section).

    ``epsilon`` is the headline: the largest over ``by_adversary`` (None when some
    party sees the data before any noise), against ``worst_party``. ``mechanism``
    holds what an outside reviewer needs to recompute it. ``simulation`` is true
    when the noise derives from the spec's seed: then no epsilon is a guarantee.
    """

    level: str
    unit: str
    epsilon: float | None
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    target_epsilon: float
    secure_rng: bool
    stopped_early: bool = False
    rounds_completed: int = 0
    notes: list[str] = field(default_factory=list)
    per_site: list[dict] | None = None
    clip_per_round: list[float] | None = None
    by_adversary: list[PartyGuarantee] = field(default_factory=list)
    worst_party: str | None = None
    mechanism: dict | None = None
    protected_units: int | None = None

    @property
    def simulation(self) -> bool:
        """Seeded noise: reproducible, and no guarantee against anyone who reads the seed."""
        return not self.secure_rng


@dataclass(frozen=True)
class CanaryTrials:
    """One site's privacy pipeline run many times without and with a canary, as an observer sees it.

    Every trial's output is given in units of the mechanism's sensitivity:
    the canary, where it is included in a step, moves that step's output by
    ``signal`` (per channel), on top of Gaussian noise of ``noise_std`` (per
    channel) if the pipeline does what the accountant assumes.

    Attributes:
        canary: which canary, in words.
        without: outputs of the trials without the canary, shape (trials, steps, channels).
        with_canary: outputs of the trials with it, same shape.
        signal: the canary's shift per step and channel where it takes part, shape (steps, channels)
            (0 in steps it is absent from in both worlds).
        noise_std: the noise the accountant assumes per channel, in the same units.
        sample_rate: the probability the accountant assumes the canary enters a step with it.
        noise_multiplier: the claimed noise multiplier against the observer, per step with the canary.
        steps_per_round: steps with the canary that one round composes, as the accountant counts them.
        whole_run: the accountant's history for the whole run, ``[(noise_multiplier, sample_rate, steps)]``.
        delta: the delta of the guarantee.
        accountant: the accountant that composes it.
        observer: what the observer sees, in words.
        assumptions: what the audit's pipeline differs in from the real run, in words.
    """

    canary: str
    without: np.ndarray
    with_canary: np.ndarray
    signal: np.ndarray
    noise_std: np.ndarray
    sample_rate: float
    noise_multiplier: float
    steps_per_round: int
    whole_run: list[tuple[float, float, int]]
    delta: float
    accountant: str
    observer: str
    assumptions: list[str] = field(default_factory=list)


class PrivacyMechanism:
    """Base class: no privacy at all (every hook passes through).

    Subclasses keep the warnings they raised in ``_notes`` (a list), for the report.
    """

    level: ClassVar[str] = "none"
    _notes: list[str]

    def _warn(self, message: str) -> None:
        # A weakened guarantee is said loudly, once per run, and kept for the report.
        if message not in self._notes:
            self._notes.append(message)
            warnings.warn(message, stacklevel=3)

    def note(self, message: str) -> None:
        """Record (and warn about) a weakened guarantee noticed elsewhere, e.g. at a remote site."""
        if not hasattr(self, "_notes"):
            self._notes = []
        self._warn(message)

    def notes(self) -> list[str]:
        """The weakened-guarantee warnings raised so far."""
        return list(getattr(self, "_notes", []))

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """The model to train (e.g. made DP-compatible)."""
        return model

    def calibrate(self, facts: FederationFacts) -> None:
        """Fit the noise to the planned federation (called once, before round 1)."""

    def pin_noise_to_site(
        self, n_train: int, training: LocalTraining, rounds: int, full_batch: bool = False
    ) -> str | None:
        """Fix the noise to what a site of ``n_train`` images gets in the real run, whatever a probe site holds.

        Audits probe a scenario's pipeline on a site holding a few images; its
        noise must be the scenario's, not one recalibrated for the probe.
        ``full_batch``: the strategy's local work is one full-batch step (FedSGD).
        Returns a line for the audit's assumptions (None when the noise does not
        depend on the site's size).
        """
        return None

    def local_loop(self, site: int) -> LocalLoop:
        """The loop site ``site``'s local steps run in (plain SGD unless the mechanism privatizes each step)."""
        return plain_loop

    def site_weight(self, n_train: int) -> float:
        """The weight a site's update gets in the average."""
        return float(n_train)

    def sample_clients(self, round_number: int, n_sites: int, rng: np.random.Generator) -> list[int] | None:
        """The sites taking part in ``round_number``, or None to keep the federation's sampling."""
        return None

    def before_protect(self, update: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A site's update as it goes into the aggregation protocol."""
        return update

    def central_noise(self, length: int, generator: torch.Generator) -> torch.Tensor | None:
        """Noise the server adds to the plaintext aggregate (None: none)."""
        return None

    def after_reveal(self, mean_update: torch.Tensor, n_messages: int) -> torch.Tensor:
        """The update the sites apply, from the revealed mean of ``n_messages`` messages."""
        return mean_update

    def round_fits(self, participants: list[int]) -> bool:
        """Whether one more round with ``participants`` stays within the budget."""
        return True

    # What a site's mechanism carries from one round to the next. In-process the mechanism object
    # lives on; Flower starts a process per message, so a SuperNode keeps these in its state.

    def site_state(self, site: int) -> dict[str, torch.Tensor]:
        """What this mechanism keeps at site ``site`` between messages (its accountant, generators, bound)."""
        return {}

    def load_site_state(self, site: int, state: Mapping[str, torch.Tensor]) -> None:
        """Resume site ``site`` from :meth:`site_state` (before it trains or reveals)."""

    # What the server's report needs from mechanisms that run at the sites: public numbers only.

    def site_report(self, site: int) -> dict[str, torch.Tensor]:
        """What site ``site`` tells the server after its part (e.g. its accountant's history)."""
        return {}

    def take_site_report(self, site: int, report: Mapping[str, torch.Tensor]) -> None:
        """The server's side of :meth:`site_report`."""

    def account_unreported(self, site: int) -> None:
        """Site ``site`` was asked to train and its report never came: account the round as spent there."""

    def quorum(self) -> int:
        """The fewest sites' messages a round may be combined from (1: any).

        Distributed noise is calibrated for ``min_sites`` shares; a sum of fewer
        would carry less noise than the accountant assumes, so such a round is
        not combined (and a site refuses to reveal such an aggregate).
        """
        return 1

    def end_round(self, participants: list[int]) -> float | None:
        """Account for the finished round; the epsilon spent so far (None without DP)."""
        return None

    def report(self, rounds_completed: int, stopped_early: bool) -> PrivacyReport | None:
        """The guarantee at the end (None without DP)."""
        return None

    def planned_report(self) -> PrivacyReport | None:
        """The guarantee the run will report if every planned round runs, without training (None without DP).

        Called on a calibrated mechanism; what ``fedsecure plan`` prints. Where participation is
        sampled, the run's figure is at most this one (every site counted in every round).
        """
        return None

    def canary_trials(self, site_size: int, trials: int, seed: int) -> list[CanaryTrials]:
        """Run one round of this mechanism's own pipeline ``trials`` times without and with each kind of canary.

        Called on a calibrated mechanism. ``site_size`` is the number of training
        images of the site whose pipeline is run; ``seed`` seeds what the
        mechanism does not draw from the OS CSPRNG. Empty: nothing to audit.
        """
        return []
