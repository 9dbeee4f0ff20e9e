"""Client-level DP: DP-FedAvg (McMahan et al. 2018), the unit of privacy is a whole site.

Each site's update is clipped to L2 norm ``clip``; Gaussian noise with standard
deviation ``noise_multiplier * clip`` is added to the *sum* of the clipped
updates; the sum is divided by the expected number of participants (the
fixed-denominator estimator, whose sensitivity does not depend on who took
part). Sites take part independently with probability ``sample_rate``
(Poisson sampling, which the accountant's amplification assumes).

Placement of the noise:

* ``central``: the server draws it and adds it to the plaintext sum;
* ``distributed``: each participant adds N(0, (z C)^2 / m) with m the expected
  number of participants, so the sum carries the full noise and the server
  never sees a less-noisy value. This is the placement that works under CKKS.
  If fewer sites arrive than expected, the sum carries less noise than
  accounted for; the federation warns.

Adaptive clipping (Andrew et al. 2021), when ``adaptive_quantile`` is set:
each site also reports whether its update fitted under the bound, as one more
value at the end of its (clipped, noised, protected) update; the noisy count
moves the bound geometrically towards the ``adaptive_quantile`` of the update
norms, ``C <- C * exp(-clip_lr * (fraction_under - quantile))``. The count's
noise (standard deviation ``count_stddev``, default the larger of expected
sites / 20 and twice the noise multiplier) is
paid for by a slightly smaller update noise multiplier,
``z_update = (z^-2 - (2 count_stddev)^-2)^-1/2``, so the pair has the privacy
of one Gaussian mechanism with multiplier ``z``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from fedsecure.privacy.accounting import calibrate_noise, extend, spent_epsilon
from fedsecure.privacy.clipping import clip_to_norm
from fedsecure.privacy.mechanism import FederationFacts, PrivacyMechanism, PrivacyReport
from fedsecure.privacy.noise import gaussian_noise

Placement = Literal["central", "distributed"]


@dataclass
class ClientLevelDP(PrivacyMechanism):
    """DP-FedAvg with fixed clipping.

    Args:
        epsilon: target epsilon over the planned rounds.
        delta: target delta.
        clip: L2 bound on each site's update.
        placement: "central" or "distributed" noise.
        accountant: registered accountant name ("rdp", "prv").
        secure_rng: draw noise from the OS CSPRNG (not reproducible).
        adaptive_quantile: target quantile of update norms for adaptive
            clipping (None: the bound stays ``clip``).
        clip_lr: step size of the geometric clip update.
        count_stddev: noise on the count of updates under the bound (default:
            the larger of expected sites / 20 and 2 x the noise multiplier).
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
    noise_multiplier: float = field(default=0.0, init=False)
    update_noise_multiplier: float = field(default=0.0, init=False)
    clip_history: list[float] = field(default_factory=list, init=False)
    sample_rate: float = field(default=1.0, init=False)
    _expected: float = field(default=1.0, init=False, repr=False)
    _history: list = field(default_factory=list, init=False, repr=False)
    _n_sites: int = field(default=1, init=False, repr=False)
    _notes: list[str] = field(default_factory=list, init=False, repr=False)

    level = "client"

    def calibrate(self, facts: FederationFacts) -> None:  # noqa: D102
        self._n_sites = len(facts.site_sizes)
        per_round = facts.clients_per_round or self._n_sites
        self.sample_rate = per_round / self._n_sites
        self._expected = self.sample_rate * self._n_sites
        self.noise_multiplier = calibrate_noise(self.epsilon, self.delta, self.sample_rate, facts.rounds, self.accountant)
        self.update_noise_multiplier = self.noise_multiplier
        if self.adaptive_quantile is not None:
            if self.count_stddev is None:
                # Andrew et al.'s m/20 assumes hundreds of sites; with few, it would eat the
                # whole budget. At 2z the count costs the update 3% more noise.
                self.count_stddev = max(self._expected / 20, 2 * self.noise_multiplier)
            share = self.noise_multiplier**-2 - (2 * self.count_stddev) ** -2
            if share <= 0:
                raise ValueError(
                    f"count_stddev {self.count_stddev:g} is too small for noise multiplier {self.noise_multiplier:.3g}: "
                    "the count would use the whole privacy budget"
                )
            self.update_noise_multiplier = share**-0.5
        self.clip_history = [self.clip]
        if self.placement == "distributed" and not facts.updates_hidden:
            self._warn(
                "distributed DP noise without secure aggregation: the server sees each site's update with only "
                f"1/{self._expected:g} of the noise variance; the guarantee holds for the aggregate, not for one "
                "site's update (use protocol = \"ckks\" or placement = \"central\")"
            )
        if self.delta >= 1 / self._n_sites:
            self._warn(
                f"delta {self.delta:g} >= 1/{self._n_sites} sites: a mechanism may then reveal a whole "
                "site's contribution with probability delta; the guarantee is weak"
            )
        if not self.secure_rng:
            self._warn("client-level DP noise comes from a seeded, non-cryptographic generator (secure_rng = false): "
                       "reproducible, but the guarantee fails against anyone who learns the seed")

    def site_weight(self, n_train: int) -> float:  # noqa: D102
        return 1.0  # every site counts once: the sensitivity is one clipped update

    def sample_clients(self, round_number: int, n_sites: int, rng: np.random.Generator) -> list[int]:  # noqa: D102
        if self.sample_rate >= 1.0:
            return list(range(n_sites))
        return [k for k in range(n_sites) if rng.random() < self.sample_rate]

    @property
    def adaptive(self) -> bool:
        """Whether the clipping bound adapts."""
        return self.adaptive_quantile is not None

    def before_protect(self, update: torch.Tensor, generator: torch.Generator) -> torch.Tensor:  # noqa: D102
        clipped, norm = clip_to_norm(update, self.clip)
        if self.adaptive:
            clipped = torch.cat([clipped, torch.tensor([float(norm <= self.clip)], dtype=clipped.dtype, device=clipped.device)])
        if self.placement == "distributed":
            share = self._expected**-0.5  # each expected site adds 1/m of the variance
            clipped = clipped + self._noise(len(update), share, generator, update.device)
        return clipped

    def central_noise(self, length: int, generator: torch.Generator) -> torch.Tensor | None:  # noqa: D102
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
        count_noise = gaussian_noise((1,), scale * self.count_stddev, secure=self.secure_rng, generator=generator, device=device)
        return torch.cat([update_noise, count_noise])

    def after_reveal(self, mean_update: torch.Tensor, n_messages: int) -> torch.Tensor:  # noqa: D102
        if self.placement == "distributed" and n_messages < self._expected:
            self._warn(
                f"fewer sites than the {self._expected:g} expected sent a noised update in some round: "
                "that round's sum carried less noise than the accountant assumes (distributed placement)"
            )
        estimate = mean_update * (n_messages / self._expected)
        if not self.adaptive:
            return estimate
        fraction_under = float(estimate[-1])
        self.clip *= math.exp(-self.clip_lr * (fraction_under - self.adaptive_quantile))
        self.clip_history.append(self.clip)
        return estimate[:-1]

    def end_round(self, participants: list[int]) -> float:  # noqa: D102
        self._history = extend(self._history, self.noise_multiplier, self.sample_rate, 1)
        return spent_epsilon(self._history, self.delta, self.accountant)

    def round_fits(self, participants: list[int]) -> bool:  # noqa: D102
        after = spent_epsilon(extend(self._history, self.noise_multiplier, self.sample_rate, 1), self.delta, self.accountant)
        return after <= self.epsilon

    def report(self, rounds_completed: int, stopped_early: bool) -> PrivacyReport:  # noqa: D102
        return PrivacyReport(
            level=self.level, unit="site", epsilon=spent_epsilon(self._history, self.delta, self.accountant),
            delta=self.delta, noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate,
            steps=sum(steps for _, _, steps in self._history), accountant=self.accountant,
            target_epsilon=self.epsilon, secure_rng=self.secure_rng, stopped_early=stopped_early,
            rounds_completed=rounds_completed, notes=list(self._notes),
            clip_per_round=list(self.clip_history) if self.adaptive else None,
        )
