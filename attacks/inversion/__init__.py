"""Gradient inversion: rebuild a site's training images from what the server observed.

One interface (:class:`InversionAttack`), chosen by name from
:data:`INVERSION_ATTACKS`:

* ``dlg``: DLG (Zhu et al. 2019), L-BFGS on the L2 gradient distance, labels optimized jointly;
* ``idlg``: iDLG (Zhao et al. 2020), the same with labels recovered analytically first;
* ``inverting_gradients``: Geiping et al. 2020, cosine distance + total variation, Adam, restarts;
* ``fedavg_update``: inverts a multi-step FedAvg update by unrolling the local steps.

Attacks receive an :class:`Observation` (the model sent, the update received,
the training the server set), never images or labels. Scoring against the
truth is the auditor's job (:mod:`attacks.metrics`).

Example:
    >>> observation = Observation.from_gradient(model, gradient, n_images=1, image_shape=(1, 28, 28), n_classes=2)
    >>> reconstruction = INVERSION_ATTACKS.get("idlg")().reconstruct(observation)
"""

from attacks.inversion.base import INVERSION_ATTACKS, InversionAttack, Reconstruction
from attacks.inversion.dlg import DLG, IDLG
from attacks.inversion.inverting_gradients import InvertingGradients
from attacks.inversion.labels import recover_labels
from attacks.inversion.matching import GradientMatching
from attacks.inversion.observation import LocalSteps, Observation
from attacks.inversion.update_inversion import FedAvgUpdateInversion

__all__ = [
    "DLG",
    "IDLG",
    "INVERSION_ATTACKS",
    "FedAvgUpdateInversion",
    "GradientMatching",
    "InversionAttack",
    "InvertingGradients",
    "LocalSteps",
    "Observation",
    "Reconstruction",
    "recover_labels",
]
