"""Empirical privacy: lower bounds on epsilon from what an attack achieved (pure functions).

A (epsilon, delta)-DP mechanism limits every membership test: its true- and
false-positive rates satisfy ``TPR <= e^eps FPR + delta`` (and the same with
the roles of in and out swapped). An attack that does better than that
*proves* the mechanism is not (eps, delta)-DP. Two ways to turn measurements
into such a proof, both at a stated confidence:

* **From TPR/FPR** (Jagielski et al. 2020): Clopper-Pearson intervals on the
  rates at one threshold, ``eps_lb = log((TPR_low - delta) / FPR_high)``. The
  threshold is chosen on one half of the scores and the bound computed on the
  other, so choosing it does not bias the bound. This is a DP lower bound only
  where membership was *randomised* (each candidate in or out by a coin the
  mechanism's guarantee covers), never for "the training set against held-out
  data".
* **One run with canaries** (Steinke, Nasr and Jagielski 2023): m canaries
  are each included in training with probability 1/2; the auditor guesses in
  or out for ``r`` of them (abstaining on the rest) and gets ``v`` right. Under
  (eps, delta)-DP, the number right is dominated by Binomial(r, e^eps / (1 +
  e^eps)) plus a delta term; the largest eps that this makes implausible at the
  confidence level is the bound (bisection).

A lower bound is evidence of leakage, never a proof of privacy: a bound far
below the accountant's epsilon may only mean the attack was weak. A bound
*above* the accountant's epsilon means a bug in the DP code or in the audit.
Every audit also has a *ceiling*: the largest bound it could show even with a
perfect attack (``one_run_ceiling``). Where the ceiling is below the
accountant's epsilon, the audit could not have detected an overspent budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import beta, binom


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval for a binomial proportion.

    Args:
        successes: observed successes, 0 <= successes <= trials.
        trials: number of trials (0 gives the uninformative interval (0, 1)).
        confidence: coverage of the interval.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, {trials}], got {successes}")
    if trials == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    return low, high


def epsilon_from_rates(
    true_positives: int, positives: int, false_positives: int, negatives: int, delta: float = 0.0,
    confidence: float = 0.95,
) -> float:
    """Lower bound on epsilon from one threshold's confusion counts (Jagielski et al. 2020).

    Uses the Clopper-Pearson lower bound of TPR (and of TNR) and the upper
    bound of FPR (and of FNR): ``max(log((TPR_lo - delta) / FPR_hi),
    log((TNR_lo - delta) / FNR_hi), 0)``.
    """
    tpr_low, _ = clopper_pearson(true_positives, positives, confidence)
    _, fpr_high = clopper_pearson(false_positives, negatives, confidence)
    tnr_low, _ = clopper_pearson(negatives - false_positives, negatives, confidence)
    _, fnr_high = clopper_pearson(positives - true_positives, positives, confidence)
    bounds = [0.0]
    for numerator, denominator in ((tpr_low - delta, fpr_high), (tnr_low - delta, fnr_high)):
        if numerator > 0 and denominator > 0:
            bounds.append(math.log(numerator / denominator))
    return max(bounds)


def epsilon_from_scores(
    scores: np.ndarray, members: np.ndarray, delta: float = 0.0, confidence: float = 0.95, seed: int = 0
) -> float:
    """Lower bound on epsilon from an attack's scores (higher = member), threshold chosen on held-out half.

    The candidates are split at random in two halves; the threshold with the
    best point estimate on the first half is applied to the second half, whose
    counts give :func:`epsilon_from_rates`.
    """
    scores, members = np.asarray(scores, dtype=np.float64), np.asarray(members, dtype=bool)
    order = np.random.default_rng(seed).permutation(len(scores))
    choose, judge = order[: len(order) // 2], order[len(order) // 2 :]
    best, best_value = None, -math.inf
    for threshold in np.unique(scores[choose]):
        guessed = scores[choose] >= threshold
        value = epsilon_from_rates(
            int((guessed & members[choose]).sum()), int(members[choose].sum()),
            int((guessed & ~members[choose]).sum()), int((~members[choose]).sum()), delta, confidence,
        )
        if value > best_value:
            best, best_value = threshold, value
    if best is None:
        return 0.0
    guessed = scores[judge] >= best
    return epsilon_from_rates(
        int((guessed & members[judge]).sum()), int(members[judge].sum()),
        int((guessed & ~members[judge]).sum()), int((~members[judge]).sum()), delta, confidence,
    )


def one_run_p_value(canaries: int, guesses: int, correct: int, epsilon: float, delta: float) -> float:
    """P-value of ``correct`` right guesses out of ``guesses`` under (epsilon, delta)-DP (Steinke et al. 2023).

    ``P[Binomial(guesses, q) >= correct] + 2 * canaries * delta * alpha`` with
    ``q = e^eps / (1 + e^eps)`` and ``alpha = max_i P[correct - i <= Binomial < correct] / i``.
    """
    if not 0 <= correct <= guesses <= canaries:
        raise ValueError("need 0 <= correct <= guesses <= canaries")
    q = 1.0 / (1.0 + math.exp(-epsilon))
    tail = float(binom.sf(correct - 1, guesses, q))
    alpha, window = 0.0, 0.0
    for i in range(1, correct + 1):
        window += float(binom.pmf(correct - i, guesses, q))
        alpha = max(alpha, window / i)
    return min(1.0, tail + 2 * canaries * delta * alpha)


def one_run_epsilon(canaries: int, guesses: int, correct: int, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest epsilon that ``correct`` right guesses reject at ``confidence`` (0 if none)."""
    significance = 1 - confidence
    if one_run_p_value(canaries, guesses, correct, 0.0, delta) >= significance:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(canaries, guesses, correct, high, delta) < significance:
        low, high = high, high * 2
        if high > 1e3:
            return low
    for _ in range(60):
        middle = (low + high) / 2
        if one_run_p_value(canaries, guesses, correct, middle, delta) < significance:
            low = middle
        else:
            high = middle
    return low


def one_run_ceiling(canaries: int, guesses: int, delta: float = 0.0, confidence: float = 0.95) -> float:
    """The largest bound a one-run audit with these counts can show: every guess right."""
    return one_run_epsilon(canaries, guesses, guesses, delta, confidence)


@dataclass(frozen=True)
class OneRunAudit:
    """The outcome of a one-run canary audit.

    Attributes:
        canaries: canaries drawn (each included with probability 1/2).
        included: how many were included.
        guesses: guesses made (the most and least member-like canaries).
        correct: right guesses.
        epsilon_lb: the lower bound at ``confidence``.
        delta: the delta the bound is for.
        confidence: its confidence level.
        epsilon_ceiling: the largest bound these counts allow (all guesses right).
    """

    canaries: int
    included: int
    guesses: int
    correct: int
    epsilon_lb: float
    delta: float
    confidence: float
    epsilon_ceiling: float = 0.0


def one_run_audit(
    scores: np.ndarray, included: np.ndarray, guesses: int, delta: float = 0.0, confidence: float = 0.95
) -> OneRunAudit:
    """Guess the ``guesses / 2`` highest-scoring canaries in and the ``guesses / 2`` lowest out; bound epsilon.

    Args:
        scores: one membership score per canary (higher = more member-like).
        included: whether each canary was in the training data.
        guesses: how many canaries to guess on (the rest abstain).
        delta: the delta of the guarantee under test.
        confidence: confidence of the bound.
    """
    scores, included = np.asarray(scores, dtype=np.float64), np.asarray(included, dtype=bool)
    m = len(scores)
    guesses = min(guesses, m) // 2 * 2
    order = np.argsort(-scores, kind="stable")
    guessed_in, guessed_out = order[: guesses // 2], order[m - guesses // 2 :] if guesses else order[:0]
    correct = int(included[guessed_in].sum() + (~included[guessed_out]).sum())
    return OneRunAudit(
        canaries=m, included=int(included.sum()), guesses=guesses, correct=correct,
        epsilon_lb=one_run_epsilon(m, guesses, correct, delta, confidence), delta=delta, confidence=confidence,
        epsilon_ceiling=one_run_ceiling(m, guesses, delta, confidence),
    )
