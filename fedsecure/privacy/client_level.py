"""Client-level DP: DP-FedAvg (McMahan et al. 2018), the unit of privacy is a whole site's data.

Each site's update is clipped to L2 norm ``clip``; Gaussian noise with standard
deviation ``noise_multiplier * clip`` is added to the *sum* of the clipped
updates; the sum is divided by the expected number of participants (the
fixed-denominator estimator, whose sensitivity does not depend on who took
part). Sites take part independently with probability ``sample_rate``
(Poisson sampling), drawn from the OS CSPRNG when ``secure_rng``.

Placement of the noise:

* ``central``: the server draws it and adds it to the plaintext sum (it sees
  the sum before: no guarantee against the server);
* ``distributed``: each participant adds ``1/min_sites`` of the noise
  variance, so any sum of at least ``min_sites`` updates carries at least the
  full noise; a round with fewer senders is not combined. This is the
  placement that works under CKKS. Another site knows its own share, so
  against it only the rest counts; the noise is calibrated for that party.

The noise is calibrated so that the epsilon against every party the noise can
protect from (the public, the other sites, and the server where it sees only
sums) meets the target (see :mod:`fedsecure.privacy.adversaries`).

Adaptive clipping (Andrew et al. 2021), when ``adaptive_quantile`` is set:
each site also reports the *centred* bit ``[norm <= clip] - 1/2`` (sensitivity
1/2) as one more value at the end of its update; the noisy count estimates the
fraction under the bound, ``(sum + noise) / expected + 1/2``, and moves the
bound geometrically, ``C <- C * exp(-clip_lr * (fraction_under - quantile))``.
The count's noise (standard deviation ``count_stddev``, default the larger of
expected sites / 20 and twice the noise multiplier) is paid for by a slightly
smaller update noise multiplier, ``z_update = (z^-2 - (2 count_stddev)^-2)^-1/2``,
so the pair is one Gaussian mechanism with multiplier ``z``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from typing_extensions import override

from fedsecure.errors import SpecError
from fedsecure.fl.privacy_hooks import FederationFacts, PrivacyMechanism, PrivacyReport
from fedsecure.privacy.accounting import calibrate_noise
from fedsecure.privacy.adversaries import (
    PartyGuarantee,
    client_level_guarantees,
    combined_noise_multiplier,
    site_noise_fraction,
    worst,
)
from fedsecure.privacy.clipping import clip_to_norm
from fedsecure.privacy.noise import gaussian_noise

Placement = Literal["central", "distributed"]


COUNT_SENSITIVITY = 0.5  # the centred bit [norm <= clip] - 1/2 moves by at most 1/2 when a site's data is zeroed out


@dataclass
class ClientLevelDP(PrivacyMechanism):
    """DP-FedAvg with fixed or adaptive clipping.

    Args:
        epsilon: target epsilon over the planned rounds, against the worst party the noise protects from.
        delta: target delta.
        clip: L2 bound on each site's update (the initial bound with adaptive clipping).
        placement: "central" or "distributed" noise.
        accountant: registered accountant name ("rdp", "prv").
        secure_rng: draw noise and participation from the OS CSPRNG (not reproducible).
        adaptive_quantile: target quantile of update norms for adaptive
            clipping (None: the bound stays ``clip``).
        clip_lr: step size of the geometric clip update.
        count_stddev: noise on the count of updates under the bound (default:
            the larger of expected sites / 20 and 2 x the noise multiplier).
        min_sites: distributed noise: the fewest senders a round is combined
            from; each sender adds 1/min_sites of the noise variance (default:
            the expected number of participants).
    """

    epsilon: float
    delta: float
    clip: float = 1.0
    placement: Placement = "distributed"
    accountant: str = "rdp"
    secure_rng: bool = False
    adaptive_quantile: float | None = None
    clip_lr: float = 0.2
    count_stddev: float | None = None
    min_sites: int | None = None
    noise_multiplier: float = field(default=0.0, init=False)
    update_noise_multiplier: float = field(default=0.0, init=False)
    clip_history: list[float] = field(default_factory=list, init=False)
    sample_rate: float = field(default=1.0, init=False)
    _expected: float = field(default=1.0, init=False, repr=False)
    _n_sites: int = field(default=1, init=False, repr=False)
    _rounds: int = field(default=0, init=False, repr=False)
    _participation: list[int] = field(default_factory=list, init=False, repr=False)
    _updates_hidden: bool = field(default=False, init=False, repr=False)
    _notes: list[str] = field(default_factory=list, init=False, repr=False)

    level = "client"

    @override
    def calibrate(self, facts: FederationFacts) -> None:
        self._n_sites = len(facts.site_sizes)
        self._participation = [0] * self._n_sites
        self._rounds = 0
        self._updates_hidden = facts.updates_hidden
        per_round = facts.clients_per_round or self._n_sites
        self.sample_rate = per_round / self._n_sites
        self._expected = self.sample_rate * self._n_sites
        if self.placement == "central":
            self.min_sites = 1
        elif self.min_sites is None:
            self.min_sites = per_round
        if self.min_sites > self._n_sites:
            raise SpecError(f"min_sites ({self.min_sites}) exceeds the {self._n_sites} sites")
        # Calibrated against another site, the best-informed party the noise can protect from: it knows who
        # took part (no amplification) and subtracts its own noise share. Every other such party sees more noise.
        facing = calibrate_noise(self.epsilon, self.delta, 1.0, facts.rounds, self.accountant)
        self.noise_multiplier = facing / math.sqrt(site_noise_fraction(self.placement, self.min_sites))
        self.update_noise_multiplier = self.noise_multiplier
        if self.adaptive_quantile is not None:
            if self.count_stddev is None:
                # Andrew et al.'s m/20 assumes hundreds of sites; with few, it would eat the
                # whole budget. At 2z (count multiplier 4z) the count costs the update 3% more noise.
                self.count_stddev = max(self._expected / 20, 2 * self.noise_multiplier)
            share = self.noise_multiplier**-2 - (self.count_stddev / COUNT_SENSITIVITY) ** -2
            if share <= 0:
                raise SpecError(
                    f"count_stddev {self.count_stddev:g} is too small for noise multiplier "
                    f"{self.noise_multiplier:.3g}: "
                    "the count would use the whole privacy budget"
                )
            self.update_noise_multiplier = share**-0.5
        self.clip_history = [self.clip]
        if self.placement == "distributed" and not facts.updates_hidden:
            self._warn(
                "distributed DP noise without secure aggregation: the server sees each site's update with only "
                f"1/{self.min_sites} of the noise variance; its epsilon is reported apart and is far larger "
                "(use protocol = \"ckks\" or placement = \"central\")"
            )
        if self.placement == "central":
            self._warn("central DP noise: the server sees the sum of the clipped updates before it adds the noise, "
                       "so there is no differential privacy against the server")
        if self.delta >= 1 / self._n_sites:
            self._warn(
                f"delta {self.delta:g} >= 1/{self._n_sites} sites: a mechanism may then reveal a whole "
                "site's contribution with probability delta; the guarantee is weak"
            )
        if not self.secure_rng:
            self._warn("client-level DP noise and participation come from a seeded, non-cryptographic generator "
                       "(secure_rng = false): a simulation, not a guarantee: anyone who learns the seed (it is in "
                       "report.json) can subtract the noise")

    @override
    def site_weight(self, n_train: int) -> float:
        return 1.0  # every site counts once: the sensitivity is one clipped update

    @override
    def sample_clients(self, round_number: int, n_sites: int, rng: np.random.Generator) -> list[int]:
        if self.sample_rate >= 1.0:
            return list(range(n_sites))
        # Amplification against the public holds only if nobody can replay who took part: the OS CSPRNG decides.
        draw = random.SystemRandom().random if self.secure_rng else rng.random
        return [k for k in range(n_sites) if draw() < self.sample_rate]

    @override
    def quorum(self) -> int:
        return int(self.min_sites or 1) if self.placement == "distributed" else 1

    @property
    def adaptive(self) -> bool:
        """Whether the clipping bound adapts."""
        return self.adaptive_quantile is not None

    @override
    def before_protect(self, update: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        clipped, norm = clip_to_norm(update, self.clip)
        if self.adaptive:
            centred = float(norm <= self.clip) - 0.5
            clipped = torch.cat([clipped, torch.tensor([centred], dtype=clipped.dtype, device=clipped.device)])
        if self.placement == "distributed":
            share = self.quorum() ** -0.5  # each of at least min_sites senders adds 1/min_sites of the variance
            clipped = clipped + self._noise(len(update), share, generator, update.device)
        return clipped

    @override
    def central_noise(self, length: int, generator: torch.Generator) -> torch.Tensor | None:
        if self.placement != "central":
            return None
        return self._noise(length, 1.0, generator, "cpu")

    def _noise(self, length: int, scale: float, generator: torch.Generator, device) -> torch.Tensor:
        update_noise = gaussian_noise(
            (length,), scale * self.update_noise_multiplier * self.clip, secure=self.secure_rng,
            generator=generator, device=device,
        )
        if not self.adaptive:
            return update_noise
        count_noise = gaussian_noise(
            (1,), scale * self.count_stddev, secure=self.secure_rng, generator=generator, device=device
        )
        return torch.cat([update_noise, count_noise])

    @override
    def after_reveal(self, mean_update: torch.Tensor, n_messages: int) -> torch.Tensor:
        estimate = mean_update * (n_messages / self._expected)
        if not self.adaptive:
            return estimate
        fraction_under = float(estimate[-1]) + 0.5  # the centred bits' mean, uncentred (Andrew et al.)
        self.clip *= math.exp(-self.clip_lr * (fraction_under - self.adaptive_quantile))
        self.clip_history.append(self.clip)
        return estimate[:-1]

    @override
    def end_round(self, participants: list[int]) -> float:
        self._rounds += 1
        for k in participants:
            self._participation[k] += 1
        return self._calibrated_epsilon(self.guarantees())

    @override
    def round_fits(self, participants: list[int]) -> bool:
        # Worst case for the next round: some site takes part once more than any has so far.
        after = self.guarantees(extra_round=True)
        return self._calibrated_epsilon(after) <= self.epsilon

    def guarantees(self, extra_round: bool = False) -> list[PartyGuarantee]:
        """The guarantee against each party after the rounds run so far (and one more if ``extra_round``)."""
        return client_level_guarantees(
            noise_multiplier=self.noise_multiplier, placement=self.placement, updates_hidden=self._updates_hidden,
            min_sites=self.quorum(), sample_rate=self.sample_rate, rounds=self._rounds + extra_round,
            max_participation=max(self._participation, default=0) + extra_round, secure_rng=self.secure_rng,
            delta=self.delta, accountant=self.accountant,
        )

    def _calibrated_epsilon(self, guarantees: list[PartyGuarantee]) -> float:
        """The largest epsilon among the parties the noise is calibrated for.

        A server that sees more than noised sums (central noise, or plaintext updates with
        only a share of the noise) is outside them: its epsilon is reported, not budgeted.
        """
        server_sees_sums = self.placement == "distributed" and self._updates_hidden
        return max(
            g.epsilon for g in guarantees if g.epsilon is not None and (g.party != "server" or server_sees_sums)
        )

    @override
    def report(self, rounds_completed: int, stopped_early: bool) -> PrivacyReport:
        guarantees = self.guarantees()
        headline = worst(guarantees)
        return PrivacyReport(
            level=self.level, unit="site (its data; which sites took part is not protected)",
            epsilon=headline.epsilon, delta=self.delta, noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate, steps=self._rounds, accountant=self.accountant,
            target_epsilon=self.epsilon, secure_rng=self.secure_rng, stopped_early=stopped_early,
            rounds_completed=rounds_completed, notes=list(self._notes),
            clip_per_round=list(self.clip_history) if self.adaptive else None,
            by_adversary=guarantees, worst_party=headline.party, protected_units=self._n_sites,
            mechanism={
                "update_noise_multiplier": self.update_noise_multiplier,
                "count_noise_stddev": self.count_stddev if self.adaptive else None,
                "count_sensitivity": COUNT_SENSITIVITY if self.adaptive else None,
                "noise_multiplier": combined_noise_multiplier(
                    self.update_noise_multiplier, self.count_stddev if self.adaptive else None,
                    COUNT_SENSITIVITY if self.adaptive else None),
                "placement": self.placement, "min_sites": self.quorum(),
                "sample_rate": self.sample_rate, "steps": self._rounds,
                "max_participation": max(self._participation, default=0), "delta": self.delta,
                "neighbouring": "zero-out: a site's whole message (clipped update and centred bit) replaced by "
                                "zero, its participation unchanged",
            },
        )
