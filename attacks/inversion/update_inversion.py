"""FedAvg-update inversion: match a multi-step local update by unrolling the local SGD."""

from __future__ import annotations

from dataclasses import dataclass, field

from attacks.inversion.base import INVERSION_ATTACKS
from attacks.inversion.matching import Distance, GradientMatching, Labels, Optimizer, Replay


@INVERSION_ATTACKS.register("fedavg_update")
@dataclass(frozen=True)
class FedAvgUpdateInversion(GradientMatching):
    """Inverts a FedAvg/FedProx update (many local steps), not one gradient.

    The observed message is the site's weights after ``epochs`` passes of
    mini-batch SGD minus the weights it received. The attack replays those
    steps on candidate images (known learning rate, epochs and batch size,
    which the server sets) and matches the replayed update to the observed one
    by cosine distance with a TV prior, as Geiping et al. 2020 did for
    multi-step updates. With one step it is Inverting Gradients.

    Attributes:
        iterations: Adam iterations.
        restarts: random initialisations per observation.
        lr: Adam step size.
        tv: total-variation weight.
        seed: seed of the initialisations.
    """

    iterations: int = 1000
    restarts: int = 4
    lr: float = 0.1
    tv: float = 1e-4
    replay: Replay = field(default="update", init=False)
    distance: Distance = field(default="cosine", init=False)
    optimizer: Optimizer = field(default="adam", init=False)
    labels: Labels = field(default="recovered", init=False)
    signed: bool = field(default=True, init=False)
