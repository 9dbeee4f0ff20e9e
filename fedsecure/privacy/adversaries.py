"""The epsilon that holds against each party of a federation (pure functions).

A differential-privacy guarantee is a statement about what one observer can
learn. A federation has several, and they see different things:

* ``public``: anyone given the released (final) model. It does not see the
  rounds, nor which sites took part in them, unless that is published.
* ``server``: the aggregator. It chooses or learns which sites take part in
  every round, and reads what it receives: each site's update in the clear
  (plaintext protocol), only the sum (secure aggregation), and, with central
  noise, the sum *before* it adds the noise.
* ``site``: another participating site. It receives every global model (so
  every noised aggregate), knows which sites took part (the count of messages
  travels with each aggregate), and knows the noise share it added itself,
  which it can subtract.

Each guarantee is computed from what that party sees, never from what
another one does. Amplification by client sampling is claimed only against a
party that cannot observe participation, and only when participation is drawn
from the OS CSPRNG; because a round with too few sites is skipped (a visible
outcome), even then only the weaker *gated* amplification holds
(:func:`~fedsecure.privacy.accounting.gated_gaussian_epsilon`).

Client-level DP here protects a site's *data* under zero-out neighbours: the
site's whole message (its clipped update and, with adaptive clipping, its
centred bit) replaced by zero, its participation unchanged. Which hospitals
take part is public in a cross-silo study and is not what the guarantee hides.
Telling which of two datasets a hospital holds (replacing its data) is two
zero-out steps: ``(2 epsilon, (1 + e^epsilon) delta)`` by group privacy.
Client-level DP covers the training data only: a site's test-set metrics and
its size reach the server without noise.
"""

from __future__ import annotations

import math

from fedsecure.fl.privacy_hooks import PartyGuarantee
from fedsecure.privacy.accounting import gated_gaussian_epsilon, spent_epsilon

PARTIES = ("public", "server", "site")




def combined_noise_multiplier(update_noise_multiplier: float, count_noise_stddev: float | None,
                              count_sensitivity: float | None) -> float:
    """The noise multiplier of one round's joint release (update, and the adaptive-clipping count if any).

    Two Gaussian mechanisms on the same data, with multipliers ``z_u`` (the
    update: sensitivity ``C``, std ``z_u C``) and ``z_c = count_stddev /
    count_sensitivity``, are together one Gaussian mechanism with multiplier
    ``(z_u^-2 + z_c^-2)^-1/2`` (both sensitivities can be reached at once).
    """
    if count_noise_stddev is None or count_sensitivity is None:
        return update_noise_multiplier
    count_multiplier = count_noise_stddev / count_sensitivity
    return (update_noise_multiplier**-2 + count_multiplier**-2) ** -0.5


def site_noise_fraction(placement: str, min_sites: int) -> float:
    """The fraction of a round's noise variance that another site cannot subtract.

    With distributed noise each of at least ``min_sites`` senders adds
    ``1/min_sites`` of the variance; a site that took part knows its own
    share, so when the target and it are among the ``min_sites`` senders the
    rest is ``(min_sites - 1) / min_sites``. A round with the target and only
    this site needs ``min_sites <= 2``: then the target's own share (``1 /
    min_sites`` of the variance, at least half) is what is left. Central
    noise is drawn by the server, and no site knows any of it.
    """
    if placement == "central":
        return 1.0
    return max(min_sites - 1, 1) / min_sites


def client_level_guarantees(
    *,
    noise_multiplier: float,
    placement: str,
    updates_hidden: bool,
    min_sites: int,
    sample_rate: float,
    rounds: int,
    max_participation: int,
    secure_rng: bool,
    delta: float,
    accountant: str,
) -> list[PartyGuarantee]:
    """The epsilon against the public, the server and another site, for client-level DP.

    Args:
        noise_multiplier: the whole round's noise in units of the joint
            sensitivity (:func:`combined_noise_multiplier`).
        placement: "central" (the server adds the noise) or "distributed" (each sender adds a share).
        updates_hidden: the protocol shows the server only the sum (secure aggregation).
        min_sites: the fewest senders a round is combined from (distributed noise shares).
        sample_rate: each site's probability of taking part in a round.
        rounds: rounds run.
        max_participation: the most rounds any one site took part in.
        secure_rng: participation and noise are drawn from the OS CSPRNG.
        delta: the delta of the guarantee.
        accountant: the accountant for the Gaussian compositions.

    Returns:
        One :class:`PartyGuarantee` per party, in :data:`PARTIES` order.
    """
    z = noise_multiplier
    known_participation = ["participation is known to this party, so no amplification by client sampling is claimed"]

    def unamplified(multiplier: float) -> float:
        return spent_epsilon([(multiplier, 1.0, max_participation)], delta, accountant)

    # The public. Both bounds below are valid; amplification is used only where it is smaller.
    gated = gated_gaussian_epsilon(z, sample_rate, rounds, delta) if sample_rate < 1.0 and secure_rng else math.inf
    if gated < unamplified(z):
        public = PartyGuarantee(
            "public", gated, z, sample_rate, rounds, "rdp-gated",
            "the released model only",
            ["which sites took part in each round is drawn from the OS CSPRNG and kept from the public: "
             "report.json reveals it (participants, per-round epsilon, skipped rounds), so it must not be "
             "published with the model",
             "a round with too few sites is skipped, which can show; only the gated amplification "
             "(linear in the sampling rate) is claimed"],
        )
    else:
        why = ("every site takes part in every round" if sample_rate >= 1.0 else
               "participation derives from the spec's seed (secure_rng = false), so it is known" if not secure_rng
               else "counting only the rounds each site took part in gives the smaller bound")
        public = PartyGuarantee("public", unamplified(z), z, 1.0, max_participation, accountant,
                                "the released model only", [f"no amplification by client sampling: {why}"])

    # The server.
    if placement == "central":
        server = PartyGuarantee(
            "server", None, None, 1.0, max_participation, accountant,
            "the sum of the clipped updates before it adds the noise",
            ["central noise trusts the server: against it there is no differential privacy"],
        )
    elif updates_hidden:
        server = PartyGuarantee(
            "server", unamplified(z), z, 1.0, max_participation, accountant,
            "only the sum of the noised updates (secure aggregation), and who took part",
            [*known_participation, f"at least {min_sites} noise shares in every combined sum (dp.min_sites)",
             "the server does not collude with a site (CKKS sites share one key)"],
        )
    else:
        alone = z / math.sqrt(min_sites)
        server = PartyGuarantee(
            "server", unamplified(alone), alone, 1.0, max_participation, accountant,
            f"each site's update in the clear, carrying only that site's 1/{min_sites} share of the noise variance",
            [*known_participation, "distributed noise without secure aggregation: each update is protected "
             "by its own noise share only"],
        )

    # Another site.
    fraction = site_noise_fraction(placement, min_sites)
    facing = z * math.sqrt(fraction)
    site_assumptions = [*known_participation, "one site, not colluding with the server or other sites"]
    if placement == "distributed":
        site_assumptions.append(
            f"it subtracts its own noise share: {fraction:.3g} of the noise variance is left"
        )
    else:
        site_assumptions.append("the server's noise is drawn where no site can learn it")
    site = PartyGuarantee("site", unamplified(facing), facing, 1.0, max_participation, accountant,
                          "every global model (the noised aggregates) and who took part", site_assumptions)
    return [public, server, site]


def worst(guarantees: list[PartyGuarantee]) -> PartyGuarantee:
    """The party with the largest epsilon (an unbounded one first): the headline guarantee."""
    return max(guarantees, key=lambda g: math.inf if g.epsilon is None else g.epsilon)


def sample_level_guarantees(
    *, epsilon: float, noise_multiplier: float, sample_rate: float, steps: int, accountant: str
) -> list[PartyGuarantee]:
    """The epsilon against each party for sample-level DP (DP-SGD at every site).

    Every party sees at most the site's DP-SGD output (its update, plaintext or
    summed), so the site's accountant bounds them all, amplified by the site's
    own Poisson batch sampling, which no other party observes.
    """
    assumptions = [
        "the site's batch sampling and noise are drawn where no other party can learn them (the OS CSPRNG)",
        "a patient with several images is protected per image (group privacy multiplies epsilon by the number "
        "of images)",
        "each site's size is public (report.json and its FedAvg weight show it): its sampling rate, steps and "
        "weight are constants fixed from it, the same for a neighbouring dataset, as Opacus's DP-SGD "
        "accounting assumes; the guarantee covers the images' content, not how many a site holds",
    ]
    sees = {
        "public": "the released model only",
        "server": "each site's DP-SGD update (or only their sum under secure aggregation)",
        "site": "every global model",
    }
    return [
        PartyGuarantee(party, epsilon, noise_multiplier, sample_rate, steps, accountant, sees[party], assumptions)
        for party in PARTIES
    ]
