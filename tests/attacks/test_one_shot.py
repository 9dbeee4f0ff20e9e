"""One-shot privacy estimation (Andrew et al. 2024): the Gaussian pair's epsilon and the canary estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.stats import norm

from attacks.mechanism_audit import gaussian_dp_epsilon
from attacks.one_shot import gaussian_pair_delta, gaussian_pair_epsilon, one_shot_estimate


@pytest.mark.parametrize("mu", [0.3, 1.0, 2.0, 4.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_equal_spreads_are_gaussian_dp(mu, delta):
    assert gaussian_pair_epsilon(0.0, 2.0, 2.0 * mu, 2.0, delta) == pytest.approx(gaussian_dp_epsilon(mu, delta),
                                                                                   rel=1e-6)


def test_identical_gaussians_are_indistinguishable():
    assert gaussian_pair_epsilon(0.5, 1.0, 0.5, 1.0, 1e-6) == 0.0


def _numeric_delta(epsilon, mean0, std0, mean1, std1):
    """sup_S P1(S) - e^eps P0(S) = integral of max(0, p1 - e^eps p0), by quadrature."""
    def excess(x):
        return max(0.0, norm.pdf(x, mean1, std1) - math.exp(epsilon) * norm.pdf(x, mean0, std0))
    low = min(mean0 - 15 * std0, mean1 - 15 * std1)
    high = max(mean0 + 15 * std0, mean1 + 15 * std1)
    # The integrand has kinks where p1 = e^eps p0 (log p1 - log p0 - eps = a x^2 + b x + c = 0): integrate between
    # them, so the quadrature's error stays far below the tolerance.
    a = 1 / (2 * std0**2) - 1 / (2 * std1**2)
    b = mean1 / std1**2 - mean0 / std0**2
    c = mean0**2 / (2 * std0**2) - mean1**2 / (2 * std1**2) + math.log(std0 / std1) - epsilon
    kinks = [r.real for r in np.roots([a, b, c]) if abs(r.imag) < 1e-12] if abs(a) > 1e-12 else (
        [-c / b] if abs(b) > 1e-12 else []
    )
    points = np.unique(np.concatenate([np.linspace(low, high, 41), [k for k in kinks if low < k < high]]))
    return sum(integrate.quad(excess, a, b, limit=200)[0] for a, b in zip(points[:-1], points[1:], strict=True))


@settings(max_examples=40, deadline=None)
@given(
    mean1=st.floats(-3, 3), std0=st.floats(0.3, 3), std1=st.floats(0.3, 3), epsilon=st.floats(0, 4),
)
def test_the_closed_form_delta_matches_quadrature(mean1, std0, std1, epsilon):
    closed = gaussian_pair_delta(epsilon, 0.0, std0, mean1, std1)
    assert closed == pytest.approx(_numeric_delta(epsilon, 0.0, std0, mean1, std1), abs=1e-7)


def test_a_wider_alternative_leaks_in_its_tails():
    # Same means, different spreads: distinguishable only through the tails, and more so at smaller delta.
    assert gaussian_pair_epsilon(0, 1, 0, 1.5, 1e-6) > gaussian_pair_epsilon(0, 1, 0, 1.5, 1e-3) > 0


def test_the_estimate_of_known_gaussian_scores_recovers_their_epsilon():
    rng = np.random.default_rng(0)
    mu, delta = 2.0, 1e-5
    found = one_shot_estimate(rng.normal(mu, 1, 2000), rng.normal(0, 1, 5000), delta, resamples=200)
    assert found.low <= gaussian_dp_epsilon(mu, delta) <= found.high
    assert found.epsilon == pytest.approx(gaussian_dp_epsilon(mu, delta), rel=0.1)


def test_pure_noise_estimates_an_epsilon_near_zero():
    rng = np.random.default_rng(1)
    found = one_shot_estimate(rng.normal(0, 1, 500), rng.normal(0, 1, 2000), 1e-5, resamples=200)
    assert found.epsilon < 0.5 and found.low < 0.05


def test_separated_scores_give_a_large_finite_estimate():
    rng = np.random.default_rng(2)
    found = one_shot_estimate(rng.normal(30, 1, 50), rng.normal(0, 1, 500), 1e-5, resamples=100)
    assert 100 < found.low <= found.epsilon <= found.high < math.inf


def test_the_estimate_needs_two_of_each():
    with pytest.raises(ValueError):
        one_shot_estimate(np.array([1.0]), np.zeros(10), 1e-5)
