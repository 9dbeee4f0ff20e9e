"""DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020): L2 gradient matching with L-BFGS."""

from __future__ import annotations

from dataclasses import dataclass, field

from attacks.inversion.base import INVERSION_ATTACKS
from attacks.inversion.matching import Distance, GradientMatching, Labels, Optimizer, Replay


@INVERSION_ATTACKS.register("dlg")
@dataclass(frozen=True)
class DLG(GradientMatching):
    """Deep Leakage from Gradients: images and soft labels by L-BFGS on the squared gradient distance.

    Attributes:
        iterations: L-BFGS iterations (function evaluations may be more, from the line search).
        restarts: random initialisations per observation.
        lr: L-BFGS step size (1 with a strong-Wolfe line search).
        tv: total-variation weight (0 in the paper).
        seed: seed of the initialisations.
    """

    iterations: int = 300
    restarts: int = 1
    lr: float = 1.0
    replay: Replay = field(default="gradient", init=False)
    distance: Distance = field(default="l2", init=False)
    optimizer: Optimizer = field(default="lbfgs", init=False)
    labels: Labels = field(default="joint", init=False)
    signed: bool = field(default=False, init=False)


@INVERSION_ATTACKS.register("idlg")
@dataclass(frozen=True)
class IDLG(DLG):
    """Improved DLG: the labels come first, analytically (:func:`~attacks.inversion.labels.recover_labels`).

    Zhao et al. recover one image's label from the sign of the output layer's
    gradient; for larger batches the label counts are recovered the same way.
    Only the images are then optimized, which makes DLG converge far more often.
    """

    labels: Labels = field(default="recovered", init=False)
