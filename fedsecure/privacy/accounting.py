"""Privacy accounting: Opacus's accountants behind one interface, chosen by name.

Pure functions of a mechanism's history ``[(noise_multiplier, sample_rate,
steps), ...]``: the epsilon it has spent, the noise multiplier that reaches a
target, whether one more step would overspend, and the gated amplification
bound for rounds whose skipping can be seen (``gated_gaussian_epsilon``).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from fedsecure.errors import SpecError
from fedsecure.registry import Registry

if TYPE_CHECKING:
    from opacus.accountants.accountant import IAccountant

History = list[tuple[float, float, int]]

# Opacus is imported when an accountant is made, not when the spec names one: a Flower ClientApp starts a
# process per message, and loading Opacus (with torch.distributed) costs it 0.7-1.4 s (importtime).
ACCOUNTANTS: Registry[Callable[[], IAccountant]] = Registry("accountant")


@ACCOUNTANTS.register("rdp")
def _rdp() -> IAccountant:
    from opacus.accountants import RDPAccountant

    return RDPAccountant()


@ACCOUNTANTS.register("prv")
def _prv() -> IAccountant:
    from opacus.accountants import PRVAccountant

    return PRVAccountant()


def spent_epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after the compositions in ``history`` (0 for an empty history)."""
    if not history or all(steps == 0 for _, _, steps in history):
        return 0.0
    return _spent_epsilon(tuple((float(z), float(q), int(n)) for z, q, n in history if n > 0), delta, accountant)


@functools.lru_cache(maxsize=4096)
def _spent_epsilon(history: tuple[tuple[float, float, int], ...], delta: float, accountant: str) -> float:
    # Remembered: every site, every round's end and every budget check asks again about the same
    # history, and RDP at a fractional order takes a few hundred milliseconds each time.
    instance = ACCOUNTANTS.get(accountant)()
    instance.history = list(history)
    with _loose_rdp_bound_is_fine():
        return float(instance.get_epsilon(delta=delta))


@functools.lru_cache(maxsize=1024)
def calibrate_noise(
    target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp"
) -> float:
    """The smallest noise multiplier (within 1%) that keeps the budget.

    ``steps`` steps at ``sample_rate`` with the returned multiplier spend at most ``target_epsilon``.
    A pure function of its arguments, remembered: every site of one size, every scenario of a
    sweep and ``fedsecure plan`` ask the same question (Opacus's search takes seconds at many steps).

    Raises:
        SpecError: no multiplier Opacus searches keeps so small a budget.
    """
    from opacus.accountants.utils import get_noise_multiplier

    ACCOUNTANTS.get(accountant)
    with _loose_rdp_bound_is_fine():
        try:
            return float(
                get_noise_multiplier(
                    target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
                    accountant=accountant, epsilon_tolerance=0.01,
                )
            )
        except ValueError as exc:  # Opacus: "The privacy budget is too low." (its noise search gives up)
            raise SpecError(
                f"epsilon {target_epsilon:g} at delta {delta:g} cannot be met by any noise the {accountant} "
                f"accountant calibrates for {steps} step(s) at sampling rate {sample_rate:.3g} ({exc}); "
                "raise epsilon or delta"
            ) from None


@contextmanager
def _loose_rdp_bound_is_fine() -> Iterator[None]:
    # RDP warns when its best order is the largest it tries: the bound is then
    # looser than it could be, i.e. epsilon is over-, never under-stated.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


def extend(history: History, noise_multiplier: float, sample_rate: float, steps: int) -> History:
    """``history`` with ``steps`` more steps of one mechanism (merged with the last entry when equal)."""
    if steps <= 0:
        return list(history)
    if history and history[-1][:2] == (noise_multiplier, sample_rate):
        return [*history[:-1], (noise_multiplier, sample_rate, history[-1][2] + steps)]
    return [*history, (noise_multiplier, sample_rate, steps)]


def gated_gaussian_rdp(noise_multiplier: float, sample_rate: float, orders: np.ndarray) -> np.ndarray:
    """Renyi DP, per round and order, of a Gaussian mechanism that runs with probability ``sample_rate``, visibly.

    Each round the unit takes part with probability ``q`` (secretly); when it
    does not, the round's outcome may differ visibly (a federation skips a
    round with too few sites), so the observer's two distributions are
    ``(1-q) bottom + q N(1, z^2)`` and ``(1-q) bottom + q N(0, z^2)`` (zero-out
    neighbours). Their Renyi divergence of order ``a`` has the closed form
    ``log(1 - q + q exp(a (a-1) / (2 z^2))) / (a-1)``: amplification linear in
    ``q``, weaker than the Poisson-subsampled Gaussian's.

    Why it bounds a real round: condition on which other sites take part. For
    each such configuration the pair of output distributions is identical
    (the round is skipped with or without the unit), or exactly the pair
    above (``min_sites - 1`` others: the unit's participation decides whether
    the round is combined), or a Poisson-type pair ``(1-q) N(mu, v0) + q
    N(mu + x, v1)`` against ``(1-q) N(mu, v0) + q N(mu, v1)`` with ``v1 >= z^2``
    (enough senders), whose divergence is at most the pair above by joint
    convexity of ``integral P^a Q^(1-a)``. The mixture over configurations is
    then bounded by joint quasi-convexity of the Renyi divergence. This holds
    for zero-out neighbours only: under add/remove the unit's absence can
    change whether a round is combined at all, and no finite bound exists.
    """
    orders = np.asarray(orders, dtype=np.float64)
    log_terms = orders * (orders - 1) / (2 * noise_multiplier**2)
    if sample_rate >= 1.0:
        return log_terms / (orders - 1)
    return np.logaddexp(math.log1p(-sample_rate), math.log(sample_rate) + log_terms) / (orders - 1)


def gated_gaussian_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` rounds of :func:`gated_gaussian_rdp`, converted over Opacus's RDP orders as it does."""
    if steps <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis.rdp import get_privacy_spent as rdp_privacy_spent

    orders = np.array(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
    rdp = steps * gated_gaussian_rdp(noise_multiplier, sample_rate, orders)
    epsilon, _ = rdp_privacy_spent(orders=list(orders), rdp=list(rdp), delta=delta)
    return float(epsilon)
