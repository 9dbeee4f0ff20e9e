"""One-shot empirical privacy estimation with canary clients (Andrew et al. 2024), pure functions.

``k`` canary clients, each with its own random unit direction, take part in a
real federated run and send that direction (clipped like any update) every
round they are sampled. Whoever holds the released model scores each canary
by the cosine between the model's change over the run and the canary's
direction; the same cosine with fresh random directions that never took part
gives the null distribution. Both are fitted with Gaussians of one common
spread (a canary's score is a null score plus the canary's own constant
contribution), and the estimate is the epsilon (at delta) of telling the two
apart: Gaussian-DP with ``mu`` = the shift over the spread. Andrew et al. fit
each its own spread; with the tens to hundreds of canaries a federation of
hospitals can host, that second spread is too noisy to use at small delta.

This is an *estimate*, not a bound: it assumes the scores are Gaussian and the
canaries typical. Its interval is a bootstrap over the canaries. It costs one
run and sees only the final model, the seat of anyone given the model; the
accountant's epsilon bounds every intermediate model too, so an estimate well
below it is expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _cdf(x: float, mean: float, std: float) -> float:
    # The normal CDF through math.erfc: scipy's per-call overhead dominates a bootstrap's thousands of bisections.
    return 0.5 * math.erfc(-(x - mean) / (std * math.sqrt(2)))


def _sf(x: float, mean: float, std: float) -> float:
    return 0.5 * math.erfc((x - mean) / (std * math.sqrt(2)))  # not 1 - cdf: that loses the tail delta lives in


def _times_exp(epsilon: float, mass: float) -> float:
    # e^epsilon * mass without overflowing e^epsilon (mass may underflow to 0 first).
    return 0.0 if mass <= 0 else math.exp(min(epsilon + math.log(mass), 700.0))


def gaussian_pair_delta(epsilon: float, mean0: float, std0: float, mean1: float, std1: float) -> float:
    """``sup_S P1(S) - e^epsilon P0(S)`` for P0 = N(mean0, std0^2), P1 = N(mean1, std1^2) (one direction).

    The set where the likelihood ratio ``p1 / p0`` exceeds ``e^epsilon`` is an
    interval or the complement of one (the log ratio is quadratic), so both
    probabilities are differences of normal CDFs at the roots.
    """
    # log p1(x) - log p0(x) - epsilon = a x^2 + b x + c
    a = 1 / (2 * std0**2) - 1 / (2 * std1**2)
    b = mean1 / std1**2 - mean0 / std0**2
    c = mean0**2 / (2 * std0**2) - mean1**2 / (2 * std1**2) + math.log(std0 / std1) - epsilon
    if abs(a) < 1e-12 * max(abs(b), 1e-300):
        if b == 0:
            return max(0.0, 1.0 - _times_exp(epsilon, 1.0)) if c > 0 else 0.0
        root = -c / b
        upper = b > 0  # the ratio exceeds e^epsilon above the root when b > 0
        p1 = _sf(root, mean1, std1) if upper else _cdf(root, mean1, std1)
        p0 = _sf(root, mean0, std0) if upper else _cdf(root, mean0, std0)
        return max(0.0, float(p1 - _times_exp(epsilon, p0)))
    discriminant = b * b - 4 * a * c
    if discriminant <= 0:
        # No sign change: everywhere above (a > 0) or nowhere (a < 0).
        return max(0.0, 1.0 - _times_exp(epsilon, 1.0)) if a > 0 else 0.0
    low, high = sorted(((-b - math.sqrt(discriminant)) / (2 * a), (-b + math.sqrt(discriminant)) / (2 * a)))

    def mass(mean: float, std: float) -> float:
        if a > 0:  # outside the roots
            return _cdf(low, mean, std) + _sf(high, mean, std)
        return _cdf(high, mean, std) - _cdf(low, mean, std)  # between them

    return max(0.0, mass(mean1, std1) - _times_exp(epsilon, mass(mean0, std0)))


def gaussian_pair_epsilon(mean0: float, std0: float, mean1: float, std1: float, delta: float) -> float:
    """The smallest epsilon at which N(mean0, std0^2) and N(mean1, std1^2) are (epsilon, delta)-indistinguishable.

    Both directions are taken (the larger epsilon). Equal standard deviations
    give Gaussian-DP with ``mu = |mean1 - mean0| / std``.
    """

    def delta_at(epsilon: float) -> float:
        return max(gaussian_pair_delta(epsilon, mean0, std0, mean1, std1),
                   gaussian_pair_delta(epsilon, mean1, std1, mean0, std0))

    if delta_at(0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while delta_at(high) > delta:
        low, high = high, 2 * high
        if high > 1e4:
            return math.inf
    for _ in range(50):
        middle = (low + high) / 2
        if delta_at(middle) > delta:
            low = middle
        else:
            high = middle
    return high


@dataclass(frozen=True)
class OneShotEstimate:
    """What the canary clients showed.

    Attributes:
        epsilon: the estimate at ``delta``.
        low: the bootstrap interval's lower end.
        high: its upper end.
        confidence: the interval's coverage.
        delta: the delta of the estimate.
        inserted_mean: mean cosine of the canaries that took part.
        inserted_std: their standard deviation.
        unseen_mean: mean cosine of the directions that did not.
        unseen_std: their standard deviation.
    """

    epsilon: float
    low: float
    high: float
    confidence: float
    delta: float
    inserted_mean: float
    inserted_std: float
    unseen_mean: float
    unseen_std: float


def one_shot_estimate(
    inserted: np.ndarray, unseen: np.ndarray, delta: float, confidence: float = 0.95, resamples: int = 1000,
    seed: int = 0,
) -> OneShotEstimate:
    """Epsilon from the cosines of the inserted canaries and of unseen directions, with a bootstrap interval.

    Args:
        inserted: one cosine per canary client that took part.
        unseen: one cosine per random direction that did not.
        delta: the delta of the estimate.
        confidence: the percentile interval's coverage.
        resamples: bootstrap resamples (both sets resampled).
        seed: the bootstrap's seed.
    """
    inserted, unseen = np.asarray(inserted, np.float64), np.asarray(unseen, np.float64)
    if len(inserted) < 2 or len(unseen) < 2:
        raise ValueError("need at least two inserted and two unseen canaries")

    def estimate(a: np.ndarray, b: np.ndarray) -> float:
        # One standard deviation for both: a canary's score is an unseen direction's plus its own constant
        # contribution, so the spreads agree; a second one fitted to a few dozen canaries would mostly add noise,
        # and at small delta a spread ratio off by a few percent dominates the epsilon.
        spread = math.sqrt((((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / (len(a) + len(b) - 2))
        return gaussian_pair_epsilon(float(b.mean()), spread, float(a.mean()), spread, delta)

    rng = np.random.default_rng(seed)
    draws = [
        estimate(inserted[rng.integers(0, len(inserted), len(inserted))], unseen[rng.integers(0, len(unseen),
                                                                                               len(unseen))])
        for _ in range(resamples)
    ]
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return OneShotEstimate(
        epsilon=estimate(inserted, unseen), low=float(low), high=float(high), confidence=confidence, delta=delta,
        inserted_mean=float(inserted.mean()), inserted_std=float(inserted.std(ddof=1)),
        unseen_mean=float(unseen.mean()), unseen_std=float(unseen.std(ddof=1)),
    )
