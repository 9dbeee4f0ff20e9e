"""FedAvg-update inversion: match a multi-step local update by unrolling the local SGD."""

from __future__ import annotations

from dataclasses import dataclass, field

from attacks.inversion.base import INVERSION_ATTACKS
from attacks.inversion.inverting_gradients import InvertingGradients
from attacks.inversion.matching import Replay


@INVERSION_ATTACKS.register("fedavg_update")
@dataclass(frozen=True)
class FedAvgUpdateInversion(InvertingGradients):
    """Inverts a FedAvg/FedProx update (many local steps), not one gradient.

    The observed message is the site's weights after ``epochs`` passes of
    mini-batch SGD minus the weights it received. The attack replays those
    steps on candidate images (known learning rate, epochs and batch size,
    which the server sets) and matches the replayed update to the observed one
    with Inverting Gradients' objective and optimizer, as Geiping et al. 2020
    did for multi-step updates. With one local step it is Inverting Gradients.
    Its tunables are Inverting Gradients'.
    """

    replay: Replay = field(default="update", init=False)
