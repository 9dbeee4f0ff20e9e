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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from typing_extensions import override

from fedsecure.errors import SpecError
from fedsecure.fl.privacy_hooks import CanaryTrials, FederationFacts, PrivacyMechanism, PrivacyReport
from fedsecure.privacy.accounting import calibrate_noise
from fedsecure.privacy.adversaries import (
    PartyGuarantee,
    client_level_guarantees,
    combined_noise_multiplier,
    site_noise_fraction,
    worst,
)
from fedsecure.privacy.clipping import clip_rows
from fedsecure.privacy.noise import gaussian_noise

Placement = Literal["central", "distributed"]


_CANARY_WIDTH = 4  # coordinates of a canary update in the mechanism audit
_CANARY_ABOVE_CLIP = 3.0  # canary norms, in clips: clipped, and (adaptive clipping only) just counted as under
_CANARY_UNDER_CLIP = 0.999
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
    _planned_rounds: int = field(default=0, init=False, repr=False)
    _participation: list[int] = field(default_factory=list, init=False, repr=False)
    _updates_hidden: bool = field(default=False, init=False, repr=False)
    _notes: list[str] = field(default_factory=list, init=False, repr=False)

    level = "client"

    @override
    def calibrate(self, facts: FederationFacts) -> None:
        self._n_sites = len(facts.site_sizes)
        self._participation = [0] * self._n_sites
        self._rounds = 0
        self._planned_rounds = facts.rounds
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
        if facts.private_names:
            self._warn(
                "client-level DP with layers that never leave a site (FedBN's normalization): the guarantee covers "
                "the shared model, all any other party sees; each site's own layers are trained without "
                "client-level noise, so a site's personalised model is not client-level private if it is released"
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
        return self._noised_message(self._clipped_message(update), generator)

    def _noised_message(self, message: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A site's clipped message(s) with its noise share, where the sites add the noise."""
        if self.placement == "distributed":
            message = message + self._noise_share(message.shape, generator, message.device)
        return message

    def _clipped_message(self, updates: torch.Tensor) -> torch.Tensor:
        """The clipped update(s), rows of ``updates`` each on its own, with the centred bit if adaptive."""
        clipped, norms = clip_rows(updates, self.clip)
        if not self.adaptive:
            return clipped
        centred = (norms <= self.clip).to(clipped.dtype) - 0.5
        return torch.cat([clipped, centred.unsqueeze(-1)], dim=-1)

    def _noise_share(self, shape: torch.Size, generator: torch.Generator, device) -> torch.Tensor:
        # Each of at least min_sites senders adds 1/min_sites of the variance.
        return self._noise(shape, self.quorum() ** -0.5, generator, device)

    @override
    def central_noise(self, length: int, generator: torch.Generator) -> torch.Tensor | None:
        if self.placement != "central":
            return None
        return self._central_noise(torch.Size([length + self.adaptive]), generator)

    def _central_noise(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """The server's noise for aggregate(s) of ``shape`` (central placement)."""
        return self._noise(shape, 1.0, generator, "cpu")

    def _noise(self, shape: torch.Size, scale: float, generator: torch.Generator, device) -> torch.Tensor:
        """Noise for message(s) of ``shape`` (the last entry of each the count, if adaptive)."""
        length = shape[-1] - self.adaptive
        update_noise = gaussian_noise(
            (*shape[:-1], length), scale * self.update_noise_multiplier * self.clip, secure=self.secure_rng,
            generator=generator, device=device,
        )
        if not self.adaptive:
            return update_noise
        count_noise = gaussian_noise(
            (*shape[:-1], 1), scale * self.count_stddev, secure=self.secure_rng, generator=generator, device=device
        )
        return torch.cat([update_noise, count_noise], dim=-1)

    @override
    def canary_trials(self, site_size: int, trials: int, seed: int) -> list[CanaryTrials]:
        """This mechanism's own clipping and noise on canary updates, two rounds, as the server sees them.

        Each trial is one site's round 1 with its update replaced by a canary
        (a random direction, in the "with" world: :meth:`before_protect`, the
        entry point every site's update goes through, on a batch of trials)
        or its message replaced by zero (the zero-out neighbour: the same noise
        step on a zero message), then round 2 with zero in both worlds, so that
        noise that repeats across rounds shows. The other ``min_sites - 1``
        senders add their noise shares too (their updates are known to the
        observer: the worst case). The observer sees what the protocol shows
        the server: the sum under secure aggregation, the site's own message
        without it; with central noise the server sees the sum before its noise,
        so the audit observes the released sum (:meth:`central_noise`'s own
        draw) and checks the public's guarantee with participation fixed.
        The claimed noise is the guarantee the report states for that party.
        Canaries: one above the clip (clipping is exercised) and, with adaptive
        clipping, one just under it (the count bit is).
        """
        generator = torch.Generator().manual_seed(seed)
        directions = torch.randn(trials, _CANARY_WIDTH, generator=generator, dtype=torch.float64)
        directions = (directions / directions.norm(dim=-1, keepdim=True)).float()
        party = "public" if self.placement == "central" else "server"
        claimed = next(g for g in self._planned_guarantees() if g.party == party)
        assert claimed.noise_multiplier is not None  # central noise audits the public, who faces all of it
        # The fraction of the noise std the observer faces: all of it in a sum (or centrally), one share otherwise.
        shares = 1.0 if self._updates_hidden or self.placement == "central" else self.quorum() ** -0.5
        count_std = (self.count_stddev or 0.0) / COUNT_SENSITIVITY * shares
        kinds = [(_CANARY_ABOVE_CLIP, -1.0)] + ([(_CANARY_UNDER_CLIP, 1.0)] if self.adaptive else [])
        found = []
        for norm_in_clips, centred_bit_sign in kinds:
            canary = directions * (norm_in_clips * self.clip)
            worlds = []
            for present in (False, True):
                first = (self.before_protect(canary, generator) if present
                         else self._noised_message(self._zero_out(trials), generator))
                second = self._noised_message(self._zero_out(trials), generator)
                rounds = [self._observe(message, generator) for message in (first, second)]
                worlds.append(np.stack([self._in_sensitivity_units(o, directions, centred_bit_sign) for o in rounds],
                                       axis=1))
            signal = [min(norm_in_clips, 1.0)] + ([1.0] if self.adaptive else [])
            found.append(CanaryTrials(
                canary=f"an update of norm {norm_in_clips:g} x the clip in a random direction",
                without=worlds[0], with_canary=worlds[1], signal=np.array([signal, [0.0] * len(signal)]),
                noise_std=np.array([self.update_noise_multiplier * shares] + ([count_std] if self.adaptive else [])),
                sample_rate=1.0, noise_multiplier=claimed.noise_multiplier, steps_per_round=1,
                whole_run=[(claimed.noise_multiplier, 1.0, self._planned_rounds)], delta=self.delta,
                accountant=self.accountant,
                observer=("the released sum (clipped updates and the server's noise), participation fixed"
                          if self.placement == "central"
                          else "the server: the sum of the noised updates (secure aggregation)" if self._updates_hidden
                          else "the server: the site's own noised update (no secure aggregation)"),
                assumptions=[
                    f"the canary site's update has {_CANARY_WIDTH} coordinates (noise is independent per "
                    "coordinate, so its projection on the canary is what a full-size update gives)",
                    "the other senders' updates are known to the observer (the worst case)",
                    *(["the sum is taken in plaintext: CKKS adds only its approximation error (about 1e-7)"]
                      if self._updates_hidden else []),
                    *(["participation is fixed: the audit checks the noise, not the amplification by sampling"]
                      if self.sample_rate < 1 else []),
                ],
            ))
        return found

    def _planned_guarantees(self) -> list[PartyGuarantee]:
        """The guarantees the report states after the planned rounds, every site taking part in each."""
        return self._guarantees(1.0, self._planned_rounds, self._planned_rounds)

    def _zero_out(self, trials: int) -> torch.Tensor:
        """The zero-out neighbour's message: nothing (the site still takes part and adds its noise)."""
        return torch.zeros(trials, _CANARY_WIDTH + self.adaptive)

    def _in_sensitivity_units(
        self, seen: torch.Tensor, directions: torch.Tensor, centred_bit_sign: float
    ) -> np.ndarray:
        """Per trial: the update projected on its canary's direction / clip; the count / its sensitivity."""
        channels = [(seen[:, :_CANARY_WIDTH].double() * directions.double()).sum(-1) / self.clip]
        if self.adaptive:
            channels.append(seen[:, -1].double() * centred_bit_sign / COUNT_SENSITIVITY)
        return torch.stack(channels, dim=-1).numpy()

    def _observe(self, message: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """What the observer sees of one round, given the audited site's noised messages (one per trial)."""
        if self.placement == "central":
            return message + self._central_noise(message.shape, generator)
        seen = message
        if self._updates_hidden:  # the other senders' messages are known; their noise shares are not
            for _ in range(self.quorum() - 1):
                seen = seen + self._noised_message(self._zero_out(len(message)), generator)
        return seen

    @override
    def site_state(self, site: int) -> dict[str, torch.Tensor]:
        # The adaptive bound moves at the sites, from each aggregate they reveal.
        return {"clip_history": torch.tensor(self.clip_history, dtype=torch.float64)} if self.adaptive else {}

    @override
    def load_site_state(self, site: int, state: Mapping[str, torch.Tensor]) -> None:
        if self.adaptive and "clip_history" in state:
            self.clip_history = [float(c) for c in state["clip_history"]]
            self.clip = self.clip_history[-1]

    @override
    def site_report(self, site: int) -> dict[str, torch.Tensor]:
        return self.site_state(site)

    @override
    def take_site_report(self, site: int, report: Mapping[str, torch.Tensor]) -> None:
        """The sites' bound, for the server's central noise and report (every site moves it alike).

        The bound follows from the noised counts in the aggregates: post-processing of what
        the mechanism releases, whatever the server could read of the aggregates themselves.
        """
        if not self.adaptive or "clip_history" not in report:
            return
        history = [float(c) for c in report["clip_history"]]
        shorter, longer = sorted((self.clip_history, history), key=len)
        if longer[: len(shorter)] != shorter:
            self.note(f"site {site} reports a clipping bound history that differs from the other sites'")
        if len(history) >= len(self.clip_history):  # a site behind by a round says nothing new
            self.clip_history = history
            self.clip = history[-1]

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
        return self._guarantees(
            self.sample_rate, self._rounds + extra_round, max(self._participation, default=0) + extra_round
        )

    def _guarantees(self, sample_rate: float, rounds: int, max_participation: int) -> list[PartyGuarantee]:
        return client_level_guarantees(
            noise_multiplier=self.noise_multiplier, placement=self.placement, updates_hidden=self._updates_hidden,
            min_sites=self.quorum(), sample_rate=sample_rate, rounds=rounds, max_participation=max_participation,
            secure_rng=self.secure_rng, delta=self.delta, accountant=self.accountant,
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
    def planned_report(self) -> PrivacyReport:
        # Every planned round, every site in each (the most a sampled site can take part in).
        rounds, participation = self._rounds, self._participation
        self._rounds, self._participation = self._planned_rounds, [self._planned_rounds] * self._n_sites
        try:
            return self.report(rounds_completed=self._planned_rounds, stopped_early=False)
        finally:
            self._rounds, self._participation = rounds, participation

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
