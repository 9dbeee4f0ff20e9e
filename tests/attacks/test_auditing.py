"""Empirical epsilon lower bounds against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from attacks.auditing import (
    clopper_pearson,
    epsilon_from_rates,
    epsilon_from_scores,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)


def test_clopper_pearson_at_the_edges_has_a_closed_form():
    # 0 of n: upper = 1 - (alpha/2)^(1/n); n of n: lower = (alpha/2)^(1/n)
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert clopper_pearson(10, 10) == pytest.approx((0.025 ** (1 / 10), 1.0))
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    low, high = clopper_pearson(5, 10)
    assert low == pytest.approx(0.187086, abs=1e-5) and high == pytest.approx(0.812914, abs=1e-5)


def test_perfect_separation_of_100_and_100_gives_the_hand_computed_bound():
    tpr_low = 0.025 ** (1 / 100)
    fpr_high = 1 - 0.025 ** (1 / 100)
    assert epsilon_from_rates(100, 100, 0, 100) == pytest.approx(math.log(tpr_low / fpr_high), rel=1e-9)
    # delta is subtracted from the true-positive side
    assert epsilon_from_rates(100, 100, 0, 100, delta=0.1) == pytest.approx(math.log((tpr_low - 0.1) / fpr_high))


def test_an_attack_no_better_than_chance_proves_nothing():
    assert epsilon_from_rates(50, 100, 50, 100) == 0.0
    assert epsilon_from_rates(0, 100, 0, 100) == 0.0


def test_random_scores_rarely_give_a_positive_bound():
    # At 95% confidence a bound above zero from uninformative scores is a 5%-level event.
    positives = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        positives += epsilon_from_scores(rng.random(400), rng.random(400) < 0.5, seed=seed) > 0
    assert positives <= 6


def test_one_run_bound_with_all_guesses_right_and_no_delta_is_closed_form():
    # P[Bin(r, q) >= r] = q^r = 0.05  ->  q = 0.05^(1/r), eps = log(q / (1 - q))
    for r in (10, 40, 100):
        q = 0.05 ** (1 / r)
        assert one_run_epsilon(1000, r, r, delta=0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-7)


def test_one_run_p_value_is_the_binomial_tail_plus_the_delta_term():
    q = 1 / (1 + math.exp(-1.0))
    from scipy.stats import binom

    assert one_run_p_value(100, 20, 15, 1.0, 0.0) == pytest.approx(float(binom.sf(14, 20, q)))
    assert one_run_p_value(100, 20, 15, 1.0, 1e-3) > one_run_p_value(100, 20, 15, 1.0, 0.0)
    # delta weakens the bound
    assert one_run_epsilon(100, 40, 40, delta=1e-3) < one_run_epsilon(100, 40, 40, delta=0.0)
    assert one_run_epsilon(100, 40, 20) == 0.0  # half right: nothing


def test_one_run_audit_guesses_the_extremes():
    scores = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0], dtype=float)
    included = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0], dtype=bool)
    audit = one_run_audit(scores, included, guesses=4)
    # guessed in: scores 9, 8 (both in); guessed out: 1, 0 (in, out) -> 3 of 4 right
    assert (audit.guesses, audit.correct, audit.included) == (4, 3, 5)
    assert audit.epsilon_lb == one_run_epsilon(10, 4, 3)
