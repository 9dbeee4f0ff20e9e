"""Differential privacy: accounting pinned on closed forms, clipping bounds, noise statistics, mechanisms at work."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from fedsecure.errors import NotSupportedError
from fedsecure.fl import FedAvg, Federation, LocalTraining
from fedsecure.privacy import (
    ClientLevelDP,
    SampleLevelDP,
    calibrate_noise,
    clip_rows,
    clip_to_norm,
    extend,
    gaussian_noise,
    spent_epsilon,
)
from fedsecure.secure import CKKSAggregation, PlainAggregation
from tests.fedsecure.test_strategies import make_data, model

OPACUS_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def gaussian_rdp_epsilon(z: float, steps: int, delta: float) -> float:
    """By hand: the (unsampled) Gaussian mechanism's RDP.

    It is steps * alpha / (2 z^2) at each order alpha, converted to (eps, delta) as Opacus converts it.
    """
    return min(
        steps * a / (2 * z**2) - (math.log(delta) + math.log(a)) / (a - 1) + math.log((a - 1) / a)
        for a in OPACUS_ORDERS
    )


def analytic_gaussian_epsilon(z: float, delta: float) -> float:
    """Exact epsilon of one Gaussian mechanism, sensitivity 1, std z (Balle and Wang 2018)."""

    def gap(eps: float) -> float:
        return norm.cdf(0.5 / z - eps * z) - math.exp(eps) * norm.cdf(-0.5 / z - eps * z) - delta

    return brentq(gap, 0.0, 100.0)


@pytest.mark.parametrize(("z", "steps", "delta"), [(1.0, 1, 1e-5), (2.0, 20, 1e-5), (0.8, 100, 1e-6)])
def test_rdp_epsilon_matches_the_closed_form(z, steps, delta):
    expected = gaussian_rdp_epsilon(z, steps, delta)
    assert spent_epsilon([(z, 1.0, steps)], delta, "rdp") == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("z", "delta"), [(1.0, 1e-5), (2.0, 1e-6)])
def test_prv_epsilon_matches_the_analytic_gaussian_mechanism(z, delta):
    assert spent_epsilon([(z, 1.0, 1)], delta, "prv") == pytest.approx(analytic_gaussian_epsilon(z, delta), rel=0.02)


def test_subsampling_amplifies_and_the_known_dp_sgd_figure():
    # Poisson sampling at q < 1 spends less than the full-batch mechanism.
    assert spent_epsilon([(1.0, 0.01, 1000)], 1e-5) < spent_epsilon([(1.0, 1.0, 1000)], 1e-5)
    # Abadi et al. 2016 / Opacus tutorials' MNIST setting: q = 256/60000, z = 1.1, 60 epochs -> epsilon about 3
    steps = 60 * 60000 // 256
    assert 2.5 < spent_epsilon([(1.1, 256 / 60000, steps)], 1e-5) < 3.3


def test_calibrated_noise_is_the_smallest_that_fits():
    z = calibrate_noise(8.0, 1e-5, 0.05, 400, "rdp")
    assert spent_epsilon([(z, 0.05, 400)], 1e-5) <= 8.0
    assert spent_epsilon([(z * 0.97, 0.05, 400)], 1e-5) > 8.0


def test_history_merges_equal_mechanisms():
    history = extend(extend([], 1.0, 0.1, 5), 1.0, 0.1, 3)
    assert history == [(1.0, 0.1, 8)]
    assert extend(history, 2.0, 0.1, 1) == [(1.0, 0.1, 8), (2.0, 0.1, 1)]
    assert spent_epsilon([], 1e-5) == 0.0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=50),
    st.floats(1e-4, 1e3),
)
def test_clipped_norm_never_exceeds_the_bound(values, bound):
    vector = torch.tensor(values, dtype=torch.float32)
    clipped, original = clip_to_norm(vector, bound)
    assert float(clipped.double().norm()) <= bound
    assert original == pytest.approx(float(vector.double().norm()))
    if original <= bound:
        assert torch.equal(clipped, vector)
    else:  # same direction
        torch.testing.assert_close(clipped.double() * original / bound, vector.double(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("secure", [False, True])
def test_noise_has_the_intended_standard_deviation(secure):
    n, std = 200_000, 0.7
    noise = gaussian_noise((n,), std, secure=secure, generator=torch.Generator().manual_seed(0)).double()
    # the sample std of n normals has relative standard error 1/sqrt(2n) = 0.16%: 5 of them is 0.8%
    assert float(noise.std()) == pytest.approx(std, rel=5 / math.sqrt(2 * n))
    assert abs(float(noise.mean())) < 5 * std / math.sqrt(n)
    standardized = (noise / std).numpy()
    kurtosis = float(np.mean(standardized**4))
    assert kurtosis == pytest.approx(3.0, abs=0.1)  # Gaussian tails, not uniform (1.8) nor Laplace (6)


def test_seeded_noise_repeats_and_secure_noise_does_not():
    def draw(secure: bool, seed: int = 0) -> torch.Tensor:
        return gaussian_noise((8,), 1.0, secure=secure, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(False), draw(False))
    assert not torch.equal(draw(True), draw(True))
    with pytest.raises(ValueError, match="seeded generator"):
        gaussian_noise((3,), 1.0, secure=False)


def client_dp(**options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism = ClientLevelDP(**({"epsilon": 8.0, "delta": 1e-5} | options))
    return mechanism


def run(data, privacy, protocol=None, rounds=3, **federation):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Federation(
            data, model(), FedAvg(), training=LocalTraining(batch_size=4, lr=0.1), rounds=rounds,
            protocol=protocol, privacy=privacy, evaluate_every=0, **federation,
        ).run().trace


def test_client_level_clip_and_distributed_noise_share():
    from fedsecure.fl.privacy_hooks import FederationFacts

    mechanism = client_dp(clip=0.5, placement="distributed")
    mechanism.calibrate(FederationFacts([10] * 4, 20, LocalTraining(), None, 0, torch.device("cpu")))
    assert mechanism.sample_rate == 1.0 and mechanism.quorum() == 4
    # Calibrated against another site: it subtracts its own quarter of the variance, so 3/4 must carry the budget.
    assert mechanism.noise_multiplier == pytest.approx(calibrate_noise(8.0, 1e-5, 1.0, 20) / math.sqrt(3 / 4))
    zero = torch.zeros(100_000)
    share = mechanism.before_protect(zero, torch.Generator().manual_seed(0))
    # each of the 4 sites (min_sites) adds N(0, (z C)^2 / 4): a sum of at least 4 carries N(0, (z C)^2)
    assert float(share.std()) == pytest.approx(mechanism.noise_multiplier * 0.5 / 2, rel=0.02)
    assert mechanism.central_noise(10, torch.Generator()) is None
    mean_of_three = torch.ones(5)
    torch.testing.assert_close(mechanism.after_reveal(mean_of_three, 3), torch.full((5,), 0.75))  # fixed denominator 4


def test_client_level_central_noise_and_clipping_in_a_federation():
    data = make_data((6, 6, 6))
    central = client_dp(clip=0.01, placement="central")
    trace = run(data, central, PlainAggregation())
    first = trace.rounds[0]
    payloads = [m.payload for m in first.received.values()]
    assert all(float(p.double().norm()) <= 0.01 for p in payloads)  # the server saw clipped updates
    assert all(c.weight == 1.0 for c in first.clients)
    epsilons = [r.epsilon for r in trace.rounds]
    assert epsilons == sorted(epsilons) and 0 < epsilons[-1] <= 8.0  # against the public and the sites
    by_party = {g.party: g for g in trace.privacy.by_adversary}
    assert max(by_party["public"].epsilon, by_party["site"].epsilon) == epsilons[-1]
    # The server adds the noise itself and sees the clipped sum before: no guarantee against it, so none overall.
    assert by_party["server"].epsilon is None and trace.privacy.epsilon is None
    assert trace.privacy.worst_party == "server" and trace.privacy.steps == 3
    assert trace.privacy.unit.startswith("site") and not trace.stopped_early


def test_central_noise_is_refused_under_ckks_and_distributed_runs():
    data = make_data((6, 6))
    with pytest.raises(NotSupportedError, match="use placement = 'distributed'"):
        run(data, client_dp(placement="central"), CKKSAggregation(), rounds=1)
    trace = run(data, client_dp(placement="distributed"), CKKSAggregation(), rounds=2)
    assert all(not m.plaintext for m in trace.rounds[0].received.values())
    assert 0 < trace.privacy.epsilon <= 8.0 and trace.privacy.worst_party == "site"


class Underpowered(ClientLevelDP):
    """Calibrates, then adds and accounts half the noise: the budget runs out before the planned rounds."""

    def calibrate(self, facts):
        super().calibrate(facts)
        self.noise_multiplier /= 2
        self.update_noise_multiplier /= 2


@pytest.mark.parametrize("placement", ["central", "distributed"])
def test_the_noise_added_is_the_noise_accounted(placement):
    # The accountant is only as true as the noise: measure what the code adds and compare with what it accounts.
    from fedsecure.fl.privacy_hooks import FederationFacts

    mechanism = client_dp(clip=0.5, placement=placement, adaptive_quantile=0.5)
    mechanism.calibrate(FederationFacts([10] * 4, 20, LocalTraining(), None, 0, torch.device("cpu")))
    n, generator = 200_000, torch.Generator().manual_seed(1)
    if placement == "central":
        noise = mechanism.central_noise(n, generator).double()
    else:  # four shares, as four sites send them
        noise = sum(mechanism.before_protect(torch.zeros(n), generator).double() for _ in range(4))
    accounted = mechanism.report(0, False).mechanism
    expected_std = accounted["update_noise_multiplier"] * 0.5
    assert float(noise[:-1].std()) == pytest.approx(expected_std, rel=5 / math.sqrt(2 * n))
    # The count's noise, over 2,000 rounds' worth of draws (each round's count value is one of them):
    draws = 2000
    if placement == "central":
        counts = torch.stack([mechanism.central_noise(1, generator)[-1] for _ in range(draws)]).double()
    else:  # four sites' shares of the count noise, minus their centred bits (four times +1/2)
        counts = torch.stack([
            sum(mechanism.before_protect(torch.zeros(1), generator)[-1] for _ in range(4)) for _ in range(draws)
        ]).double() - 2.0
    assert float(counts.std()) == pytest.approx(accounted["count_noise_stddev"], rel=5 / math.sqrt(2 * draws))
    assert abs(float(counts.mean())) < 5 * accounted["count_noise_stddev"] / math.sqrt(draws)


def test_training_stops_before_overspending():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism = Underpowered(epsilon=8.0, delta=1e-5, placement="distributed")
    trace = run(make_data((6, 6)), mechanism, CKKSAggregation(), rounds=10)
    assert trace.stopped_early and 0 < len(trace.rounds) < 10
    assert trace.privacy.epsilon <= 8.0 and trace.privacy.stopped_early
    # Against a site (2 sites: it subtracts its own half of the variance) one more round would overspend.
    facing = mechanism.noise_multiplier * math.sqrt(1 / 2)
    assert spent_epsilon([(facing, 1.0, len(trace.rounds))], 1e-5) == pytest.approx(trace.privacy.epsilon)
    assert spent_epsilon([(facing, 1.0, len(trace.rounds) + 1)], 1e-5) > 8.0


def test_warnings_for_weak_guarantees():
    mechanism = ClientLevelDP(epsilon=8.0, delta=0.6, placement="central")
    with pytest.warns(UserWarning) as caught:
        Federation(make_data((6, 6)), model(), FedAvg(), training=LocalTraining(), rounds=1, privacy=mechanism).run()
    messages = " ".join(str(w.message) for w in caught)
    assert "delta 0.6 >= 1/2 sites" in messages
    assert "secure_rng = false" in messages


def test_sample_level_keeps_one_accountant_per_site_across_rounds():
    data = make_data((12, 20), seed=3)
    mechanism = SampleLevelDP(epsilon=8.0, delta=1e-3, clip=1.0)
    trace = run(data, mechanism, rounds=3)
    report = trace.privacy
    assert report.unit == "patient (sample)" and len(report.per_site) == 2
    for site, size in zip(report.per_site, (12, 20), strict=True):
        batches = math.ceil(size / 4)
        assert site["sample_rate"] == pytest.approx(1 / batches)
        assert site["steps"] == 3 * batches  # every local step of every round was accounted
        assert 0 < site["epsilon"] <= 8.0
    assert report.epsilon == max(s["epsilon"] for s in report.per_site)
    assert [r.epsilon for r in trace.rounds] == sorted(r.epsilon for r in trace.rounds)


def test_ghost_clipping_gives_the_same_update_as_per_sample_hooks():
    data = make_data((10,), seed=4)
    ghost = run(data, SampleLevelDP(epsilon=8.0, delta=1e-3, grad_sample_mode="ghost"), rounds=2).final_global
    hooks = run(data, SampleLevelDP(epsilon=8.0, delta=1e-3, grad_sample_mode="hooks"), rounds=2).final_global
    torch.testing.assert_close(ghost, hooks, rtol=1e-4, atol=1e-6)


def test_batchnorm_models_are_fixed_with_a_loud_warning():
    data = make_data((8,))
    bn_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 2)
    )
    mechanism = SampleLevelDP(epsilon=8.0, delta=1e-3)
    with pytest.warns(UserWarning, match="BatchNorm -> GroupNorm"):
        federation = Federation(
            data, bn_model, FedAvg(), training=LocalTraining(batch_size=4), rounds=1, privacy=mechanism
        )
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in federation.model.modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = federation.run().trace.privacy
    assert any("BatchNorm -> GroupNorm" in note for note in report.notes)


def test_adaptive_clipping_moves_the_bound_towards_the_quantile_at_the_same_privacy():
    data = make_data((6, 6, 6, 6), seed=5)
    mechanism = client_dp(clip=10.0, placement="central", adaptive_quantile=0.5, clip_lr=0.2)
    trace = run(data, mechanism, PlainAggregation(), rounds=6)
    clips = trace.privacy.clip_per_round
    assert len(clips) == 7 and clips[0] == 10.0
    # every update norm is far below 10: the fraction under the bound is 1 (+ noise of std z/2),
    # so C shrinks by exp(-0.1) a round on average
    assert clips[-1] < 10.0 * math.exp(-0.1 * 6 * 0.5)
    z, s = mechanism.noise_multiplier, mechanism.count_stddev
    assert s == pytest.approx(max(4 / 20, 2 * z))
    # The centred bit has sensitivity 1/2, so the count's multiplier is s / (1/2) = 2s (Andrew et al.).
    assert mechanism.update_noise_multiplier == pytest.approx((z**-2 - (2 * s) ** -2) ** -0.5)
    assert mechanism.update_noise_multiplier > z  # the count's noise is paid for by the update's
    by_party = {g.party: g.epsilon for g in trace.privacy.by_adversary}
    assert 0 < by_party["site"] <= 8.0 and 0 < by_party["public"] <= 8.0
    # the server saw one more value per site: the centred under-the-bound bit, 1 - 1/2
    message = next(iter(trace.rounds[0].received.values()))
    assert message.length == trace.update_length + 1 and float(message.payload[-1]) == 0.5


def test_adaptive_clipping_under_ckks_with_distributed_noise():
    mechanism = client_dp(clip=1.0, placement="distributed", adaptive_quantile=0.5)
    trace = run(make_data((6, 6), seed=6), mechanism, CKKSAggregation(), rounds=2)
    assert len(trace.privacy.clip_per_round) == 3 and trace.privacy.epsilon <= 8.0


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 6), width=st.integers(1, 40), scale=st.floats(1e-3, 1e3), bound=st.floats(1e-3, 10))
def test_clipping_a_batch_clips_each_row_as_one_vector(rows, width, scale, bound):
    batch = torch.randn(rows, width, generator=torch.Generator().manual_seed(rows * 100 + width)) * scale
    clipped, norms = clip_rows(batch, bound)
    for row in range(rows):
        alone, norm = clip_to_norm(batch[row], bound)
        assert torch.equal(clipped[row], alone) and float(norms[row]) == norm
        assert float(clipped[row].double().norm()) <= bound


def test_the_server_accounts_a_site_whose_report_never_came_as_if_it_trained():
    """On Flower the server's DP-SGD epsilon comes from the sites' reports; a lost one must not lower it."""
    from fedsecure.fl.round_loop import federation_facts

    data = make_data((12, 16))
    training = LocalTraining(epochs=1, batch_size=4, lr=0.05)
    sites = SampleLevelDP(epsilon=8.0, delta=1e-3, clip=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded noise: a simulation, which the scenario's report says
        federation = Federation(data, model(), FedAvg(), training=training, rounds=2, privacy=sites, evaluate_every=0)
        federation.run()
        server = SampleLevelDP(epsilon=8.0, delta=1e-3, clip=1.0)
        server.calibrate(federation_facts(
            site_sizes=[s.n_train for s in data.sites], rounds=2, training=training, clients_per_round=None,
            seed=0, device=torch.device("cpu"), private_names=set(), protocol=PlainAggregation(),
        ))
    server.take_site_report(0, sites.site_report(0))  # site 0 reported both rounds
    server.account_unreported(1)  # site 1's replies were lost: the server counts round 1, then round 2
    server.account_unreported(1)
    expected = {row["site"]: row for row in sites.report(2, False).per_site}
    reported = {row["site"]: row for row in server.report(2, False).per_site}
    assert reported == expected  # the same histories, so the same epsilons, as the sites' own
    server.take_site_report(1, sites.site_report(1))  # a late report replaces the assumption
    assert server.report(2, False).per_site == sites.report(2, False).per_site
