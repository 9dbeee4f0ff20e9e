"""Privacy accounting: Opacus's accountants behind one interface, chosen by name.

Pure functions of a mechanism's history ``[(noise_multiplier, sample_rate,
steps), ...]``: the epsilon it has spent, the noise multiplier that reaches a
target, and whether one more step would overspend.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.accountant import IAccountant
from opacus.accountants.utils import get_noise_multiplier

from fedsecure.registry import Registry

History = list[tuple[float, float, int]]

ACCOUNTANTS: Registry[type[IAccountant]] = Registry("accountant")
ACCOUNTANTS.register("rdp")(RDPAccountant)
ACCOUNTANTS.register("prv")(PRVAccountant)


def spent_epsilon(history: History, delta: float, accountant: str = "rdp") -> float:
    """Epsilon at ``delta`` after the compositions in ``history`` (0 for an empty history)."""
    if not history or all(steps == 0 for _, _, steps in history):
        return 0.0
    instance = ACCOUNTANTS.get(accountant)()
    instance.history = [entry for entry in history if entry[2] > 0]
    with _loose_rdp_bound_is_fine():
        return float(instance.get_epsilon(delta=delta))


def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str = "rdp") -> float:
    """The smallest noise multiplier (within 1%) whose ``steps`` steps at ``sample_rate`` spend at most ``target_epsilon``."""
    ACCOUNTANTS.get(accountant)
    with _loose_rdp_bound_is_fine():
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps,
                accountant=accountant, epsilon_tolerance=0.01,
            )
        )


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
