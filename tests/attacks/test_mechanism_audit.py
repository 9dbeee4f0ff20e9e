"""Mechanism audit: Gaussian-DP against hand-computed cases and dp_accounting, bounds against sampled mechanisms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting.pld import privacy_loss_distribution as pld
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from attacks.mechanism_audit import (
    SubsampledGaussianFamily,
    audit_two_samples,
    clopper_pearson_lower,
    clopper_pearson_upper,
    gaussian_dp_delta,
    gaussian_dp_epsilon,
    gaussian_dp_mu,
)

EXACT = SubsampledGaussianFamily(1.0, 1)
# One subsampled family for every test below: its Monte-Carlo table takes seconds and is cached per family.
SUBSAMPLED = SubsampledGaussianFamily(0.25, 4)


def _subsampled_trials(rng: np.random.Generator, trials: int, z: float, shift: float = 1.0):
    # Per step N(b * shift, z^2), b ~ Bernoulli(0.25) with the canary; N(0, z^2) without.
    out = rng.normal(0.0, z, (trials, SUBSAMPLED.steps))
    inside = rng.normal(0.0, z, (trials, SUBSAMPLED.steps)) + shift * (rng.random((trials, SUBSAMPLED.steps)) < 0.25)
    return out, inside


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.5])
@pytest.mark.parametrize("t", [-0.5, 0.4, 1.0, 2.0])
def test_gaussian_dp_mu_recovers_the_shift_of_two_unit_gaussians(mu, t):
    alpha, beta = norm.sf(t), norm.cdf(t - mu)  # P[N(0,1) >= t], P[N(mu,1) < t]
    assert gaussian_dp_mu(alpha, beta) == pytest.approx(mu, rel=1e-9)


def test_gaussian_dp_mu_edge_cases():
    assert gaussian_dp_mu(0.5, 0.5) == 0.0
    assert gaussian_dp_mu(0.7, 0.6) == 0.0  # worse than chance: clamped, not negative
    assert gaussian_dp_mu(0.0, 0.3) == math.inf
    assert gaussian_dp_mu(0.3, 0.0) == math.inf


@pytest.mark.parametrize("mu", [0.1, 0.5, 1.0, 3.0])
def test_gaussian_dp_delta_at_epsilon_zero_is_the_total_variation(mu):
    assert gaussian_dp_delta(0.0, mu) == pytest.approx(2 * norm.cdf(mu / 2) - 1, rel=1e-12)
    assert gaussian_dp_delta(1.0, 0.0) == 0.0


@pytest.mark.parametrize("delta", [1e-5, 1e-3])
@pytest.mark.parametrize("mu", [0.5, 1.0, 2.0])
def test_gaussian_dp_epsilon_matches_dp_accounting_for_the_gaussian_mechanism(mu, delta):
    reference = pld.from_gaussian_mechanism(
        standard_deviation=1 / mu, value_discretization_interval=1e-4
    ).get_epsilon_for_delta(delta)
    assert gaussian_dp_epsilon(mu, delta) == pytest.approx(reference, rel=1e-2)


def test_gaussian_dp_epsilon_edge_cases():
    assert gaussian_dp_epsilon(0.0, 1e-5) == 0.0
    assert gaussian_dp_epsilon(0.1, 0.5) == 0.0  # delta already above the total variation: epsilon 0 suffices
    assert gaussian_dp_epsilon(math.inf, 1e-5) == math.inf


@settings(max_examples=100, deadline=None)
@given(st.floats(0.05, 20.0), st.floats(1e-10, 0.5))
def test_gaussian_dp_epsilon_is_the_smallest_epsilon_reaching_delta(mu, delta):
    epsilon = gaussian_dp_epsilon(mu, delta)
    assert gaussian_dp_delta(epsilon, mu) <= delta * (1 + 1e-9)
    if epsilon > 0:
        assert gaussian_dp_delta(epsilon * (1 - 1e-6), mu) > delta


def test_clopper_pearson_at_the_edges_has_a_closed_form():
    # 0 of n: upper = 1 - (1 - level)^(1/n); n of n: lower = (1 - level)^(1/n)
    assert clopper_pearson_upper(0, 20, 0.95) == pytest.approx(1 - 0.05 ** (1 / 20), rel=1e-9)
    assert clopper_pearson_lower(20, 20, 0.95) == pytest.approx(0.05 ** (1 / 20), rel=1e-9)
    assert clopper_pearson_lower(0, 20, 0.95) == 0.0 and clopper_pearson_upper(20, 20, 0.95) == 1.0
    assert (clopper_pearson_lower(0, 0, 0.95), clopper_pearson_upper(0, 0, 0.95)) == (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 500).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))), st.floats(0.5, 0.9999))
def test_clopper_pearson_bounds_bracket_the_observed_rate(k_and_n, level):
    k, n = k_and_n
    rate = k / n if n else 0.5
    assert clopper_pearson_lower(k, n, level) <= rate <= clopper_pearson_upper(k, n, level)


@pytest.mark.parametrize("steps", [1, 4, 9])
@pytest.mark.parametrize("z", [0.5, 1.0, 3.0])
def test_exact_family_curve_is_gaussian_dp_with_mu_sqrt_steps_over_z(steps, z):
    family = SubsampledGaussianFamily(1.0, steps)
    for alpha in (0.001, 0.05, 0.3, 0.7):
        beta = family.type_two_error(alpha, z)
        assert beta == pytest.approx(norm.cdf(norm.ppf(1 - alpha) - math.sqrt(steps) / z), rel=1e-9)
        assert gaussian_dp_mu(alpha, beta) == pytest.approx(math.sqrt(steps) / z, rel=1e-6)
        assert family.noise_multiplier_bound(alpha, beta) == pytest.approx(z, rel=1e-6)


def test_exact_family_curve_by_hand():
    # 4 steps at z = 2: mu = 1, f(0.05) = Phi(1.644854 - 1)
    assert SubsampledGaussianFamily(1.0, 4).type_two_error(0.05, 2.0) == pytest.approx(0.740489, abs=1e-6)


def test_subsampled_curve_lies_between_the_unsampled_curve_and_chance_and_grows_with_z():
    unsampled = SubsampledGaussianFamily(1.0, SUBSAMPLED.steps)
    zs = np.geomspace(0.05, 150.0, 40)
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.3, 0.5, 0.8):
        curve = np.array([SUBSAMPLED.type_two_error(alpha, z) for z in zs])
        assert np.all(np.diff(curve) >= 0)
        # The table is read on the cautious side (lowered by its Monte-Carlo error): up to about 0.01 below.
        assert np.all(curve >= [unsampled.type_two_error(alpha, z) - 1.2e-2 for z in zs])
        assert np.all(curve <= 1 - alpha + 1e-12)
    # and strictly more private where it matters: subsampling at 1/4 is far from the unsampled curve
    assert SUBSAMPLED.type_two_error(0.1, 1.0) > unsampled.type_two_error(0.1, 1.0) + 0.3


def test_subsampled_curve_with_almost_no_noise_is_the_chance_of_never_taking_a_step():
    # Steps taken are told apart perfectly; runs that take none (probability 0.75^4) look exactly like "out",
    # so the best test at false-positive rate alpha misses them with probability 1 - alpha.
    for alpha in (0.001, 0.1, 0.5):
        # Read on the cautious side: never above the truth, at most its Monte-Carlo allowance below it.
        assert 0.75**4 * (1 - alpha) - 8e-3 <= SUBSAMPLED.type_two_error(alpha, 0.02) <= 0.75**4 * (1 - alpha) + 1e-3
    assert SUBSAMPLED.noise_multiplier_bound(1e-3, 0.2) == 0.0  # below every curve of the grid: no noise explains it


@pytest.mark.parametrize("z", [0.7, 1.0, 2.0])
def test_subsampled_curve_agrees_with_dp_accounting(z):
    # Any (eps, delta(eps)) the accountant guarantees puts f(alpha) above 1 - delta - e^eps alpha and
    # e^-eps (1 - delta - alpha); the envelope over eps is the curve itself where the accountant is tight.
    composed = pld.from_gaussian_mechanism(
        standard_deviation=z, sampling_prob=SUBSAMPLED.sample_rate, value_discretization_interval=1e-3
    ).self_compose(SUBSAMPLED.steps)
    epsilons = np.linspace(0.0, 12.0, 241)
    deltas = np.asarray(composed.get_delta_for_epsilon(epsilons))
    for alpha in (0.001, 0.01, 0.05, 0.1, 0.3, 0.5):
        envelope = max(
            0.0, np.max(1 - deltas - np.exp(epsilons) * alpha), np.max(np.exp(-epsilons) * (1 - deltas - alpha))
        )
        curve = SUBSAMPLED.type_two_error(alpha, z)
        # Never more private than the accountant allows (that would let the audit prove too much): the table is
        # read on the cautious side. And not much less private either (that would only weaken the audit).
        if alpha <= 0.3:
            assert curve <= envelope + 2e-3
        assert curve >= envelope - 1.2e-2


@settings(max_examples=150, deadline=None)
@given(st.floats(1e-4, 0.9), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([EXACT, SUBSAMPLED]))
def test_a_smaller_beta_never_allows_a_larger_noise_multiplier(alpha, beta_one, beta_two, family):
    smaller, larger = sorted((beta_one, beta_two))
    assert family.noise_multiplier_bound(alpha, smaller) <= family.noise_multiplier_bound(alpha, larger)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 0.5), st.floats(0.3, 5.0))
def test_subsampled_bound_inverts_the_curve(alpha, z):
    assert SUBSAMPLED.noise_multiplier_bound(alpha, SUBSAMPLED.type_two_error(alpha, z)) == pytest.approx(z, rel=1e-3)


def test_noise_multiplier_bound_at_the_edges():
    for family in (EXACT, SUBSAMPLED):
        assert family.noise_multiplier_bound(0.2, 0.8) == math.inf  # chance rules out nothing
        assert family.noise_multiplier_bound(0.2, 0.9) == math.inf
    assert EXACT.noise_multiplier_bound(0.0, 0.5) == 0.0  # perfect separation: no noise at all
    assert SUBSAMPLED.noise_multiplier_bound(1e-3, 0.0) == 0.0  # below every curve on the grid: no noise explains it


def test_samples_of_a_gaussian_mechanism_give_a_tight_bound_on_its_noise():
    z, rng = 1.5, np.random.default_rng(0)
    bound = audit_two_samples({"x": rng.normal(0.0, z, 200_000)}, {"x": rng.normal(1.0, z, 200_000)}, EXACT)
    assert bound.noise_lower <= z <= bound.noise_upper <= 1.05 * z
    assert bound.noise_lower <= bound.noise_estimate <= bound.noise_upper
    assert bound.noise_estimate == pytest.approx(z, rel=0.03)
    assert (bound.statistic, bound.negatives, bound.positives, bound.confidence) == ("x", 100_000, 100_000, 0.95)


def test_pure_noise_proves_nothing():
    rng = np.random.default_rng(1)
    bound = audit_two_samples({"x": rng.standard_normal(200_000)}, {"x": rng.standard_normal(200_000)}, EXACT)
    assert bound.noise_upper > 20
    assert gaussian_dp_epsilon(1 / bound.noise_upper, 1e-5) < 0.3


def test_a_correct_mechanism_is_rarely_accused():
    # At 95% confidence a bound below the true noise is a 5%-level event; 4 of 40 leaves room for chance.
    accused = 0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        out, inside = rng.normal(0.0, 1.0, 4000), rng.normal(1.0, 1.0, 4000)
        bound = audit_two_samples({"x": out}, {"x": inside}, EXACT, seed=seed)
        accused += bound.noise_upper < 1.0
    assert accused <= 4


def test_samples_of_the_subsampled_mechanism_give_a_valid_reasonably_tight_bound():
    z = 1.0
    out, inside = _subsampled_trials(np.random.default_rng(2), 40_000, z)
    scores_out = {"likelihood ratio": SUBSAMPLED.log_likelihood_ratio(out, z), "sum": out.sum(axis=1)}
    scores_in = {"likelihood ratio": SUBSAMPLED.log_likelihood_ratio(inside, z), "sum": inside.sum(axis=1)}
    bound = audit_two_samples(scores_out, scores_in, SUBSAMPLED, seed=2)
    assert 0.97 * z <= bound.noise_upper <= 1.5 * z
    assert bound.noise_lower <= bound.noise_estimate <= bound.noise_upper


def test_a_mechanism_with_half_the_noise_is_caught():
    z, rng = 1.5, np.random.default_rng(3)
    # the "in" side shifted by 2 instead of 1: in sensitivity units the noise is z / 2
    bound = audit_two_samples({"x": rng.normal(0.0, z, 20_000)}, {"x": rng.normal(2.0, z, 20_000)}, EXACT)
    assert bound.noise_upper < z
    out, inside = _subsampled_trials(rng, 40_000, 1.0, shift=2.0)
    bound = audit_two_samples(
        {"likelihood ratio": SUBSAMPLED.log_likelihood_ratio(out, 1.0)},
        {"likelihood ratio": SUBSAMPLED.log_likelihood_ratio(inside, 1.0)},
        SUBSAMPLED,
    )
    assert bound.noise_upper < 1.0


def test_audit_refuses_mismatched_statistics_too_few_trials_and_non_finite_scores():
    scores = np.arange(10.0)
    with pytest.raises(ValueError, match="same"):
        audit_two_samples({"a": scores}, {"b": scores}, EXACT)
    with pytest.raises(ValueError, match="same"):
        audit_two_samples({"a": scores, "b": scores}, {"a": scores}, EXACT)
    with pytest.raises(ValueError, match="same"):
        audit_two_samples({}, {}, EXACT)
    with pytest.raises(ValueError, match="4 trials"):
        audit_two_samples({"a": scores[:3]}, {"a": scores}, EXACT)
    with pytest.raises(ValueError, match="4 trials"):
        audit_two_samples({"a": scores}, {"a": scores[:3]}, EXACT)
    with pytest.raises(ValueError, match="non-finite"):
        audit_two_samples({"a": np.append(scores, np.nan)}, {"a": scores}, EXACT)


def test_family_refuses_bad_parameters():
    for sample_rate, steps in ((0.0, 1), (1.5, 1), (0.5, 0)):
        with pytest.raises(ValueError):
            SubsampledGaussianFamily(sample_rate, steps)
