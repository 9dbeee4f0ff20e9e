"""The guarantee against each party: pinned on hand-computed cases and on Google's dp-accounting."""

import math
import warnings

import dp_accounting as dpa
import numpy as np
import pytest
import torch
from dp_accounting.rdp import rdp_privacy_accountant
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad
from scipy.stats import norm

from fedsecure.errors import SpecError
from fedsecure.fl import FedAvg, Federation, LocalTraining
from fedsecure.fl.privacy_hooks import FederationFacts
from fedsecure.privacy import ClientLevelDP, calibrate_noise, spent_epsilon
from fedsecure.privacy.accounting import gated_gaussian_epsilon, gated_gaussian_rdp
from fedsecure.privacy.adversaries import client_level_guarantees, combined_noise_multiplier
from fedsecure.secure import CKKSAggregation, PlainAggregation
from tests.fedsecure.test_privacy import gaussian_rdp_epsilon
from tests.fedsecure.test_strategies import make_data, model


def google_rdp_epsilon(event: dpa.DpEvent, delta: float) -> float:
    """Google's RDP accountant: an implementation independent of Opacus's and of ours."""
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(delta)


def calibrated(**options) -> ClientLevelDP:
    facts = options.pop("facts", FederationFacts([10] * 4, 20, LocalTraining(), None, 0, torch.device("cpu"),
                                                 updates_hidden=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism = ClientLevelDP(**({"epsilon": 8.0, "delta": 1e-5} | options))
        mechanism.calibrate(facts)
    return mechanism


def test_the_epsilon_against_a_site_by_hand():
    # 4 sites, distributed noise, CKKS. A site knows its own 1/4 share of the variance: 3/4 is left, so it faces
    # z sqrt(3/4) per round; it knows who took part (no amplification). RDP of the Gaussian: T a / (2 z'^2).
    z = 2.0
    by_party = {g.party: g for g in client_level_guarantees(
        noise_multiplier=z, placement="distributed", updates_hidden=True, min_sites=4, sample_rate=1.0, rounds=20,
        max_participation=20, secure_rng=True, delta=1e-5, accountant="rdp",
    )}
    assert by_party["site"].noise_multiplier == pytest.approx(z * math.sqrt(3 / 4))
    assert by_party["site"].epsilon == pytest.approx(gaussian_rdp_epsilon(z * math.sqrt(3 / 4), 20, 1e-5), rel=1e-9)
    assert by_party["server"].epsilon == pytest.approx(gaussian_rdp_epsilon(z, 20, 1e-5), rel=1e-9)  # sum only
    assert by_party["public"].epsilon == by_party["server"].epsilon  # no sampling to amplify
    # Without secure aggregation the server reads each update with its own quarter of the variance: z / 2.
    plain = {g.party: g for g in client_level_guarantees(
        noise_multiplier=z, placement="distributed", updates_hidden=False, min_sites=4, sample_rate=1.0, rounds=20,
        max_participation=20, secure_rng=True, delta=1e-5, accountant="rdp",
    )}
    assert plain["server"].epsilon == pytest.approx(gaussian_rdp_epsilon(z / 2, 20, 1e-5), rel=1e-9)
    # Central noise: the server adds it itself; the sites know none of it.
    central = {g.party: g for g in client_level_guarantees(
        noise_multiplier=z, placement="central", updates_hidden=False, min_sites=1, sample_rate=1.0, rounds=20,
        max_participation=20, secure_rng=True, delta=1e-5, accountant="rdp",
    )}
    assert central["server"].epsilon is None
    assert central["site"].epsilon == pytest.approx(gaussian_rdp_epsilon(z, 20, 1e-5), rel=1e-9)


def test_adaptive_clipping_is_accounted_as_google_composes_it():
    # The old code added the uncentred bit (sensitivity 1) but paid for it as if its sensitivity were 1/2;
    # this pins the composed mechanism against Google's accountant given the report's mechanism alone.
    mechanism = calibrated(placement="distributed", adaptive_quantile=0.5)
    site = next(g for g in mechanism.guarantees(extra_round=False) if g.party == "site")
    assert site.epsilon == 0.0  # nothing run yet
    for _ in range(20):
        mechanism.end_round([0, 1, 2, 3])
    report = mechanism.report(20, False)
    m = report.mechanism
    fraction = 3 / 4  # another site's view: its own share subtracted
    joint = dpa.ComposedDpEvent([
        dpa.GaussianDpEvent(m["update_noise_multiplier"] * math.sqrt(fraction)),
        dpa.GaussianDpEvent(m["count_noise_stddev"] / m["count_sensitivity"] * math.sqrt(fraction)),
    ])
    google = google_rdp_epsilon(dpa.SelfComposedDpEvent(joint, m["steps"]), m["delta"])
    assert report.epsilon == pytest.approx(google, rel=0.02) or report.epsilon >= google
    assert report.epsilon <= 8.0 and report.worst_party == "site"
    # The uncentred bit with the same noise would spend more than the target: the bug this guards against.
    uncentred = dpa.ComposedDpEvent([
        dpa.GaussianDpEvent(m["update_noise_multiplier"] * math.sqrt(fraction)),
        dpa.GaussianDpEvent(m["count_noise_stddev"] * math.sqrt(fraction)),
    ])
    assert google_rdp_epsilon(dpa.SelfComposedDpEvent(uncentred, 20), 1e-5) > 8.0 * 1.05


def test_combined_noise_multiplier_is_one_gaussian():
    # Google composes two Gaussians of multipliers 2 and 8 into one of (1/4 + 1/64)^-1/2.
    combined = combined_noise_multiplier(2.0, 4.0, 0.5)
    google = google_rdp_epsilon(dpa.SelfComposedDpEvent(
        dpa.ComposedDpEvent([dpa.GaussianDpEvent(2.0), dpa.GaussianDpEvent(8.0)]), 20), 1e-5)
    ours = google_rdp_epsilon(dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(combined), 20), 1e-5)
    assert combined == pytest.approx((1 / 4 + 1 / 64) ** -0.5) and ours == pytest.approx(google, rel=1e-6)


@pytest.mark.parametrize(("z", "q", "order"), [(1.0, 0.5, 2.0), (2.0, 0.1, 8.0), (0.8, 0.9, 1.5)])
def test_gated_rdp_matches_numerical_integration(z, q, order):
    # D_a(P || Q) for P = (1-q) bottom + q N(1, z^2), Q = (1-q) bottom + q N(0, z^2), integrated numerically.
    def integrand(x: float) -> float:
        return math.exp(order * norm.logpdf(x, 1, z) + (1 - order) * norm.logpdf(x, 0, z))

    continuous, _ = quad(integrand, -40 * z, 40 * z, limit=400)
    by_hand = math.log((1 - q) + q * continuous) / (order - 1)
    assert float(gated_gaussian_rdp(z, q, np.array([order]))[0]) == pytest.approx(by_hand, rel=1e-6)


def real_round_rdp(z, q, order, others, min_sites, other_sum, reverse):
    """D_a between one real round with the unit's update (1) and with it zeroed out (0), by numerical integration.

    The unit and ``others`` other sites each take part with probability q; a round with fewer than
    ``min_sites`` senders is skipped (bottom); each sender adds 1/min_sites of the variance z^2.
    """
    from itertools import product

    skipped, parts = 0.0, []
    for unit_in, *flags in product([0, 1], *[[0, 1]] * others):
        weight = q ** (unit_in + sum(flags)) * (1 - q) ** (1 + others - unit_in - sum(flags))
        senders = unit_in + sum(flags)
        if senders < min_sites:
            skipped += weight
            continue
        parts.append((weight, unit_in, other_sum * sum(flags), z * math.sqrt(senders / min_sites)))

    def density(y, with_unit):
        return sum(w * norm.pdf(y, mean + (unit if with_unit else 0), sd) for w, unit, mean, sd in parts)

    first, second = (False, True) if reverse else (True, False)

    def integrand(y: float) -> float:
        return math.exp(order * math.log(density(y, first)) + (1 - order) * math.log(density(y, second)))

    continuous, _ = quad(integrand, -30 * z - 5, 30 * z + 5, limit=400)
    return math.log(skipped + continuous) / (order - 1)


@pytest.mark.parametrize(("z", "q", "order", "others", "min_sites", "other_sum"), [
    (1.0, 0.5, 2.0, 2, 2, 0.0), (0.8, 0.3, 6.0, 2, 2, 0.7), (1.5, 0.7, 4.0, 3, 3, -0.4), (1.0, 0.4, 3.0, 2, 1, 0.2),
])
def test_gated_rdp_bounds_a_real_round_with_quorum_skips(z, q, order, others, min_sites, other_sum):
    # The closed form is a bound on the real mixture over the other sites' participation, in both directions.
    bound = float(gated_gaussian_rdp(z, q, np.array([order]))[0])
    for reverse in (False, True):
        assert real_round_rdp(z, q, order, others, min_sites, other_sum, reverse) <= bound * (1 + 1e-6)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.5, 5.0), st.floats(0.05, 0.95), st.integers(1, 200))
def test_gated_amplification_lies_between_poisson_and_none(z, q, steps):
    gated = gated_gaussian_epsilon(z, q, steps, 1e-5)
    assert spent_epsilon([(z, q, steps)], 1e-5) <= gated + 1e-9  # weaker than Poisson subsampling's
    assert gated <= spent_epsilon([(z, 1.0, steps)], 1e-5) + 1e-9  # never worse than no amplification
    assert gated_gaussian_epsilon(z, 1.0, steps, 1e-5) == pytest.approx(spent_epsilon([(z, 1.0, steps)], 1e-5))


def poisson_facts(sites: int, per_round: int) -> FederationFacts:
    return FederationFacts([10] * sites, 10, LocalTraining(), per_round, 0, torch.device("cpu"), updates_hidden=True)


def test_amplification_is_claimed_only_against_the_public_and_only_with_secret_participation():
    seeded = calibrated(placement="distributed", facts=poisson_facts(8, 4), secure_rng=False)
    secret = calibrated(placement="distributed", facts=poisson_facts(8, 4), secure_rng=True)
    for mechanism in (seeded, secret):
        for _ in range(10):
            mechanism.end_round([0, 1, 2, 3])
    seeded_by, secret_by = ({g.party: g for g in m.guarantees()} for m in (seeded, secret))
    assert seeded_by["public"].sample_rate == 1.0  # participation derives from the printed seed
    assert secret_by["public"].sample_rate == 0.5 and secret_by["public"].accounting == "rdp-gated"
    assert secret_by["public"].epsilon < seeded_by["public"].epsilon
    for party in ("server", "site"):  # they see who took part, whatever the generator
        assert secret_by[party].sample_rate == 1.0 and secret_by[party].epsilon == seeded_by[party].epsilon
    # The noise is calibrated for another site, the worst party it protects against: exactly the target.
    assert max(g.epsilon for g in secret.guarantees()) == pytest.approx(
        spent_epsilon([(secret.noise_multiplier * math.sqrt(3 / 4), 1.0, 10)], 1e-5))
    assert secret.noise_multiplier * math.sqrt(3 / 4) == pytest.approx(calibrate_noise(8.0, 1e-5, 1.0, 10))


def test_secure_participation_is_not_replayable_from_the_seed():
    secret = calibrated(placement="distributed", facts=poisson_facts(8, 4), secure_rng=True)
    draws = {tuple(secret.sample_clients(1, 8, np.random.default_rng(0))) for _ in range(4)}
    assert len(draws) > 1  # the same seeded generator, different participants: the CSPRNG decided
    seeded = calibrated(placement="distributed", facts=poisson_facts(8, 4))
    first, again = (seeded.sample_clients(1, 8, np.random.default_rng(0)) for _ in range(2))
    assert first == again


def test_a_round_below_min_sites_is_not_combined():
    # 4 sites sampled at rate 1/2 with min_sites 2: the rounds where fewer than 2 took part leave the model as it was.
    data = make_data((6, 6, 6, 6), seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism = ClientLevelDP(epsilon=8.0, delta=1e-5, placement="distributed", min_sites=2, clip=0.5)
        federation = Federation(data, model(), FedAvg(), training=LocalTraining(batch_size=4, lr=0.1), rounds=12,
                                protocol=CKKSAggregation(), privacy=mechanism, clients_per_round=2, evaluate_every=0,
                                seed=3)
        trace = federation.run().trace
    short = [r for r in trace.rounds if len(r.clients) < 2]
    skipped = [int(e.split(":")[0].removeprefix("round ")) for e in trace.events if "not combined" in e]
    assert skipped, "with this seed some round samples exactly one site"
    assert set(skipped) <= {r.round for r in short} and all(not r.clients for r in short)
    models = [r.global_model for r in trace.rounds] + [trace.final_global]
    for r in short:
        torch.testing.assert_close(models[r.round], models[r.round - 1])  # nothing was applied
    combined = [r for r in trace.rounds if len(r.clients) >= 2]
    assert combined and all(not torch.equal(models[r.round], models[r.round - 1]) for r in combined)


def test_quorum_is_all_expected_sites_by_default_and_one_for_central_noise():
    assert calibrated(placement="distributed").quorum() == 4
    assert calibrated(placement="distributed", facts=poisson_facts(8, 6)).quorum() == 6
    assert calibrated(placement="central").quorum() == 1
    assert calibrated(placement="distributed", min_sites=3).quorum() == 3
    with pytest.raises(SpecError, match="min_sites"):
        calibrated(placement="distributed", min_sites=5)


def test_plaintext_distributed_noise_reports_the_servers_local_epsilon_apart():
    data = make_data((6, 6), seed=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism = ClientLevelDP(epsilon=8.0, delta=1e-5, placement="distributed", clip=0.5)
        trace = Federation(data, model(), FedAvg(), training=LocalTraining(batch_size=4), rounds=3,
                           protocol=PlainAggregation(), privacy=mechanism, evaluate_every=0).run().trace
    by_party = {g.party: g for g in trace.privacy.by_adversary}
    # The server reads each update with half the variance: it faces z / sqrt(2) and spends more than the target.
    assert by_party["server"].noise_multiplier == pytest.approx(mechanism.noise_multiplier / math.sqrt(2))
    assert trace.privacy.epsilon == by_party["server"].epsilon > by_party["site"].epsilon
    assert not trace.stopped_early  # the server's epsilon is reported, not budgeted


def test_a_count_noise_that_would_spend_the_whole_budget_is_a_spec_error():
    # Found in review: a plain ValueError here reached the CLI as a traceback.
    with pytest.raises(SpecError, match="count_stddev 0.1 is too small"):
        calibrated(placement="distributed", adaptive_quantile=0.5, count_stddev=0.1)
