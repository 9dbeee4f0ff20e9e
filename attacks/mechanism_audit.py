"""Auditing a Gaussian mechanism from samples of its output (pure functions).

The mechanism audit runs a privacy pipeline many times on two neighbouring
inputs (without and with a canary) and asks how well the two output
distributions can be told apart. Any test of "canary in?" has a false-positive
rate ``alpha`` and a false-negative rate ``beta``; a mechanism with the
privacy the accountant claims can only reach pairs on or above that
mechanism's *trade-off curve* ``beta >= f(alpha)`` (Dong, Roth and Su 2019).
A measured pair below the curve proves the claim false.

Which curve. Nasr et al. 2023 ("Tight Auditing of Differentially Private
Machine Learning") assume the curve is Gaussian-DP's,
``f(alpha) = Phi(Phi^-1(1 - alpha) - mu)``, and estimate ``mu`` from one
measured pair: exact for a Gaussian mechanism (client-level DP per round),
but for DP-SGD's Poisson-subsampled steps the Gaussian curve fitted at
mid-range rates understates the epsilon by a factor of about two (our
simulation: 1.8 against 3.8 for four steps at rate 1/4). So, as Mahloujifar,
Melis and Chaudhuri 2024 do for one-run audits, the curve is the one of the
family the accountant itself assumes: ``steps`` compositions of a Gaussian
with noise multiplier ``z``, each step taken with probability
``sample_rate``. The audit finds the largest ``z`` (the *least* private
member of the family, in the accountant's units) that the measured pair
rules out; the accountant then turns that ``z`` into an epsilon exactly as it
turns the claimed one (``fedsecure.audit.mechanism``). The assumption this
makes, that the pipeline's curve is a member of the family, is what the
report states next to the figure; a pipeline outside it (one that reuses its
noise, say) is caught all the same, because its measured pair lies below
every curve the claimed ``z`` allows.

How a pair is measured: each trial gives a score under a few statistics
(the likelihood ratio of the claimed mechanism, a linear sum, ...). On one
random half of the trials the statistic and threshold with the strongest
bound are chosen; on the other half the counts at that threshold give
Clopper-Pearson bounds on ``alpha`` and ``beta``, each at one-sided level
``(1 + confidence) / 2`` so that both hold together with ``confidence``
(Bonferroni). Choosing on data the bound never sees keeps the bound valid.

DP-Auditorium's property testers (Kong et al. 2024) test a mechanism as a
black box without knowing its family; they need far more samples for the
same power at these epsilons, which is why the family is used here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.stats import beta as beta_distribution
from scipy.stats import norm

# The noise multipliers the family's curves are tabulated on (log-spaced); bounds are interpolated between them.
_Z_GRID = np.geomspace(0.04, 50.0, 121)
_DRAWS = 300_000
_MC_SIGMAS = 3.0  # the Monte-Carlo table's error allowance, in standard errors (each side: 0.13% to exceed it)
Rate = Callable[[int, int], float]  # (errors, trials) -> the rate used (a bound or the point estimate)
CANDIDATE_ALPHAS = np.array([0.5, 0.3, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001])


def clopper_pearson_upper(successes: int, trials: int, level: float) -> float:
    """One-sided Clopper-Pearson upper bound, at ``level``, on a binomial proportion."""
    if trials == 0 or successes >= trials:
        return 1.0
    return float(beta_distribution.ppf(level, successes + 1, trials - successes))


def clopper_pearson_lower(successes: int, trials: int, level: float) -> float:
    """One-sided Clopper-Pearson lower bound, at ``level``, on a binomial proportion."""
    if trials == 0 or successes <= 0:
        return 0.0
    return float(beta_distribution.ppf(1 - level, successes, trials - successes + 1))


def gaussian_dp_mu(alpha: float, beta: float) -> float:
    """The ``mu`` of the Gaussian-DP curve through (alpha, beta): ``Phi^-1(1 - alpha) - Phi^-1(beta)`` (>= 0)."""
    if alpha <= 0 or beta <= 0:
        return math.inf
    return max(0.0, float(norm.isf(alpha) - norm.ppf(beta)))


def gaussian_dp_delta(epsilon: float, mu: float) -> float:
    """Delta of mu-Gaussian-DP at ``epsilon`` (Dong, Roth and Su 2019, Corollary 2.13)."""
    if mu <= 0:
        return 0.0
    # The second term in log space: e^epsilon overflows long before the product does.
    return float(norm.cdf(-epsilon / mu + mu / 2) - math.exp(epsilon + norm.logcdf(-epsilon / mu - mu / 2)))


def gaussian_dp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon with ``gaussian_dp_delta(epsilon, mu) <= delta`` (0 if epsilon 0 already does)."""
    if mu <= 0 or gaussian_dp_delta(0.0, mu) <= delta:
        return 0.0
    if math.isinf(mu):
        return math.inf
    low, high = 0.0, 1.0
    while gaussian_dp_delta(high, mu) > delta:
        low, high = high, 2 * high
    for _ in range(100):
        middle = (low + high) / 2
        if gaussian_dp_delta(middle, mu) > delta:
            low = middle
        else:
            high = middle
    return high


@dataclass(frozen=True)
class SubsampledGaussianFamily:
    """The mechanisms an accountant composes: ``steps`` Gaussian steps, each run with probability ``sample_rate``.

    In units of the sensitivity, one step outputs ``N(b, z^2)`` with ``b = 1``
    if the canary was sampled (probability ``sample_rate``) and 0 otherwise;
    the neighbour without the canary outputs ``N(0, z^2)``. Its optimal test
    (Neyman-Pearson) thresholds the likelihood ratio, whose curve is exact
    for ``sample_rate = 1`` (``mu = sqrt(steps) / z``) and otherwise estimated
    from ``_DRAWS`` seeded draws (reproducible), read conservatively: lowered by
    three standard errors of its Monte-Carlo error, so that the table can only
    weaken a bound, never invent one.
    """

    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.sample_rate <= 1 or self.steps < 1:
            raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {self.sample_rate}, {self.steps}")

    @property
    def exact(self) -> bool:
        """Whether the curve is in closed form (no subsampling)."""
        return self.sample_rate >= 1.0

    def log_likelihood_ratio(self, steps_output: np.ndarray, noise_multiplier: float) -> np.ndarray:
        """The optimal statistic for "canary in", from each trial's per-step outputs in sensitivity units.

        Args:
            steps_output: shape (trials, steps).
            noise_multiplier: the ``z`` the statistic is optimal for.
        """
        x = np.asarray(steps_output)
        x = x.astype(np.result_type(x.dtype, np.float32), copy=False)  # float32 stays (the table's draws)
        z2 = noise_multiplier**2
        if self.exact:
            return (x / z2).sum(axis=-1)
        q = self.sample_rate
        # log(1 - q + q e^y), each step; above y = 30 the 1 - q no longer shows (and e^y would overflow float32).
        y = (x - 0.5) / z2
        return np.where(y > 30, math.log(q) + y, np.log1p(q * np.expm1(np.minimum(y, 30)))).sum(axis=-1)

    def type_two_error(self, alpha: float, noise_multiplier: float) -> float:
        """``f(alpha)``: the least false-negative rate any test with false-positive rate ``alpha`` can have.

        Subsampled families give the table's lower bound on it (see :meth:`_column`).
        """
        if self.exact:
            return float(norm.cdf(norm.isf(alpha) - math.sqrt(self.steps) / noise_multiplier))
        column = self._column(alpha)
        return float(np.interp(math.log(noise_multiplier), np.log(_Z_GRID), column, left=column[0], right=1 - alpha))

    def noise_multiplier_bound(self, alpha: float, beta: float) -> float:
        """The largest ``z`` whose curve the pair (alpha, beta) does not cross: the least privacy it proves.

        Every family member with a larger ``z`` has ``f(alpha) > beta``, so a
        test reaching (alpha, beta) rules it out. Returns ``inf`` when the pair
        rules out nothing (``beta >= 1 - alpha``), and 0 when it rules out every
        member (no noise at all explains it: an unbounded epsilon).
        """
        if beta >= 1 - alpha:
            return math.inf
        if self.exact:
            mu = gaussian_dp_mu(alpha, beta)
            return math.sqrt(self.steps) / mu if mu > 0 else math.inf
        column = self._column(alpha)  # a lower bound on f(alpha) on the z grid, non-decreasing in z
        if beta < column[0]:
            return 0.0
        if beta >= column[-1]:
            return math.inf
        # The last grid z whose curve is still at most beta, then linear interpolation in log z to the crossing.
        index = int(np.searchsorted(column, beta, side="right")) - 1
        low, high = column[index], column[index + 1]
        weight = 0.0 if high <= low else (beta - low) / (high - low)
        return float(math.exp((1 - weight) * math.log(_Z_GRID[index]) + weight * math.log(_Z_GRID[index + 1])))

    def _column(self, alpha: float) -> np.ndarray:
        """A lower bound on ``f(alpha)`` for every grid ``z``, allowing for the table's Monte-Carlo error.

        The table's threshold at a grid alpha is itself estimated, so the curve
        is read at a larger alpha (``f`` falls with alpha), the first grid point
        at least ``_MC_SIGMAS`` standard errors above ``alpha``, and lowered by as
        many standard errors of its own: a lower ``f`` can only weaken a bound.
        """
        alphas, curves = _tradeoff_table(self.sample_rate, self.steps)
        shifted = alpha + _MC_SIGMAS * math.sqrt(alpha * (1 - alpha) / _DRAWS) + 1 / _DRAWS
        column = curves[:, min(int(np.searchsorted(alphas, shifted, side="left")), len(alphas) - 1)]
        lowered = np.maximum(column - _MC_SIGMAS * np.sqrt(column * (1 - column) / _DRAWS) - 1 / _DRAWS, 0.0)
        return np.minimum.accumulate(lowered[::-1])[::-1]  # non-decreasing in z, by lowering only


@lru_cache(maxsize=16)
def _tradeoff_table(sample_rate: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The family's curves ``f(alpha)``, one row per grid ``z``, from seeded common random numbers."""
    family = SubsampledGaussianFamily(sample_rate, steps)
    alphas = np.concatenate([[0.0], np.geomspace(1e-5, 1.0, 4000)])  # fine: a curve is read at the next grid alpha
    rng = np.random.default_rng(20230101)
    noise_out = rng.standard_normal((_DRAWS, steps), dtype=np.float32)  # float32: half the time; ample precision
    noise_in = rng.standard_normal((_DRAWS, steps), dtype=np.float32)
    sampled = rng.random((_DRAWS, steps)) < sample_rate
    curves = np.empty((len(_Z_GRID), len(alphas)))
    for row, z in enumerate(_Z_GRID):
        out = np.sort(family.log_likelihood_ratio(noise_out * z, z))
        inside = np.sort(family.log_likelihood_ratio(noise_in * z + sampled, z))
        # Threshold at the (1 - alpha) quantile of the "out" statistic; beta = P_in[statistic < threshold], plus the
        # tied "in" scores the test keeps: at small z the statistic saturates (every step not taken scores exactly
        # log(1 - q)), and the optimal test rejects a score tied with the threshold with just the probability that
        # makes its false-positive rate alpha (Neyman-Pearson); counting ties as rejected gave beta = 0 there.
        thresholds = np.interp((1 - alphas) * (_DRAWS - 1), np.arange(_DRAWS), out)  # quantiles of the sorted draws
        out_below, out_upto = (np.searchsorted(out, thresholds, side=side) for side in ("left", "right"))
        in_below, in_upto = (np.searchsorted(inside, thresholds, side=side) for side in ("left", "right"))
        tied = (out_upto - out_below).astype(np.float64)
        reject_tied = np.divide(alphas * _DRAWS - (_DRAWS - out_upto), tied, out=np.zeros_like(tied), where=tied > 0)
        curves[row] = (in_below + (1 - np.clip(reject_tied, 0.0, 1.0)) * (in_upto - in_below)) / _DRAWS
    return alphas, curves


@dataclass(frozen=True)
class TradeoffBound:
    """What one mechanism audit measured.

    Attributes:
        statistic: the statistic chosen on the selection half.
        threshold: its threshold ("in" when the score is at least this).
        false_positives: "out" trials of the judging half scored as in.
        negatives: "out" trials in the judging half.
        false_negatives: "in" trials of the judging half scored as out.
        positives: "in" trials in the judging half.
        confidence: joint confidence of the two rate bounds.
        noise_upper: the largest noise multiplier not ruled out at ``confidence`` (inf: none
            ruled out): the mechanism is at most this private, so it gives the epsilon lower bound.
        noise_estimate: the same from the point rates.
        noise_lower: the same from the rates' lower bounds (the interval's other end: the epsilon upper end).
    """

    statistic: str
    threshold: float
    false_positives: int
    negatives: int
    false_negatives: int
    positives: int
    confidence: float
    noise_upper: float
    noise_estimate: float
    noise_lower: float


def audit_two_samples(
    out_scores: Mapping[str, np.ndarray],
    in_scores: Mapping[str, np.ndarray],
    family: SubsampledGaussianFamily,
    confidence: float = 0.95,
    seed: int = 0,
) -> TradeoffBound:
    """Bound the noise multiplier of a mechanism from trials without (``out``) and with (``in``) the canary.

    Args:
        out_scores: per statistic name, one score per trial without the canary (higher = more "in").
        in_scores: the same statistics for the trials with the canary.
        family: the mechanism family the accountant assumes.
        confidence: joint confidence of the bound.
        seed: the split into a selection half and a judging half.
    """
    if set(out_scores) != set(in_scores) or not out_scores:
        raise ValueError("out_scores and in_scores need the same, non-empty, statistics")
    level = (1 + confidence) / 2
    rng = np.random.default_rng(seed)
    n_out, n_in = len(next(iter(out_scores.values()))), len(next(iter(in_scores.values())))
    if any(len(v) != n_out for v in out_scores.values()) or any(len(v) != n_in for v in in_scores.values()):
        raise ValueError("every statistic needs one score per trial")
    if n_out < 4 or n_in < 4:
        raise ValueError("need at least 4 trials on each side")
    order_out, order_in = rng.permutation(n_out), rng.permutation(n_in)
    pick_out, judge_out = order_out[: n_out // 2], order_out[n_out // 2 :]
    pick_in, judge_in = order_in[: n_in // 2], order_in[n_in // 2 :]

    def bound(out: np.ndarray, inside: np.ndarray, threshold: float, alpha_at: Rate, beta_at: Rate) -> float:
        false_positives, false_negatives = int((out >= threshold).sum()), int((inside < threshold).sum())
        return family.noise_multiplier_bound(alpha_at(false_positives, len(out)), beta_at(false_negatives, len(inside)))

    def upper(k: int, n: int) -> float:
        return clopper_pearson_upper(k, n, level)

    best: tuple[float, str, float] | None = None
    for name in sorted(out_scores):
        out, inside = np.asarray(out_scores[name], np.float64), np.asarray(in_scores[name], np.float64)
        if not (np.isfinite(out).all() and np.isfinite(inside).all()):
            raise ValueError(f"statistic {name!r} has non-finite scores")
        # Thresholds at fixed false-positive rates of the selection half: few candidates, so that the choice
        # does not chase noise; plus just above the largest "out" score, which separates perfectly if anything does.
        # A Gaussian curve is resolved best mid-range (the rates' intervals are narrowest there), so the exact family
        # looks only there; a subsampled one has its evidence in the tail (the rare steps with the canary).
        alphas = CANDIDATE_ALPHAS[CANDIDATE_ALPHAS >= 0.1] if family.exact else CANDIDATE_ALPHAS
        candidates = np.quantile(out[pick_out], 1 - alphas)
        candidates = np.append(candidates, np.nextafter(out[pick_out].max(), math.inf))
        for threshold in candidates:
            z = bound(out[pick_out], inside[pick_in], float(threshold), upper, upper)
            if best is None or z < best[0]:
                best = (z, name, float(threshold))
    assert best is not None
    _, name, threshold = best
    out, inside = np.asarray(out_scores[name], np.float64)[judge_out], np.asarray(in_scores[name], np.float64)[judge_in]
    false_positives, false_negatives = int((out >= threshold).sum()), int((inside < threshold).sum())

    def lower(k: int, n: int) -> float:
        return clopper_pearson_lower(k, n, level)

    return TradeoffBound(
        statistic=name, threshold=threshold, false_positives=false_positives, negatives=len(out),
        false_negatives=false_negatives, positives=len(inside), confidence=confidence,
        noise_upper=bound(out, inside, threshold, upper, upper),
        noise_estimate=bound(out, inside, threshold, lambda k, n: k / n, lambda k, n: k / n),
        noise_lower=bound(out, inside, threshold, lower, lower),
    )
