"""One site's side of a federation: what runs inside a hospital.

A site trains from the global model it holds, passes the update through its
privacy mechanism and protects it with the aggregation protocol; after the
server's sum it reveals the aggregate and moves its copy of the global model
with the strategy. The in-process :class:`~fedsecure.fl.federation.Federation`
runs every site's part with these functions; the Flower ClientApp
(:mod:`fedsecure.flower`) runs one site's part on its own machine.
"""

from __future__ import annotations

import torch

from fedsecure.data.federated import SiteData
from fedsecure.devices import Stopwatch
from fedsecure.errors import TrainingDivergedError
from fedsecure.fl.evaluation import predict
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.state import ModelState
from fedsecure.fl.strategies import SiteMemory, Strategy
from fedsecure.fl.trace import ClientRound
from fedsecure.fl.training import LocalTraining
from fedsecure.secure.protocol import Aggregate, ClientRole, Message
from fedsecure.seeding import torch_generator


class SiteRunner:
    """One site: its local data, its private state and its local training.

    Args:
        index: the site's position in the federation (it names the site's random streams).
        site: the site's local data.
        state: the model the site trains in (may be shared by sites run in one process).
        strategy: the federation's strategy.
        training: local training settings.
        privacy: the federation's privacy mechanism, calibrated.
        seed: the federation's root seed.
        device: where the site trains.
    """

    def __init__(
        self, index: int, site: SiteData, state: ModelState, strategy: Strategy, *, training: LocalTraining,
        privacy: PrivacyMechanism, seed: int, device: torch.device,
    ) -> None:
        self.index = index
        self.site = site
        self.state = state
        self.strategy = strategy
        self.training = training
        self.privacy = privacy
        self.seed = seed
        self.device = device
        self.train_tensors = site.train.tensors(device)
        self.test_tensors = site.test.tensors(device)
        self.private = {k: v.clone() for k, v in state.get_private().items()}
        self._loop = privacy.local_loop(index)
        self.memory: SiteMemory = {}  # the strategy's own state at this site (SCAFFOLD's control variate)
        self.last_sent: torch.Tensor | None = None

    @property
    def weight(self) -> float:
        """The site's weight in the average."""
        return self.privacy.site_weight(self.site.n_train)

    def message(
        self, global_vector: torch.Tensor, round_number: int, client: ClientRole
    ) -> tuple[Message, ClientRound]:
        """Train from ``global_vector``, privatize and protect the update: what the site sends the server."""
        train_clock, protect_clock = Stopwatch(self.device), Stopwatch(self.device)
        with train_clock.measure():
            update, steps = self._local_update(global_vector, round_number)
        if not bool(torch.isfinite(update).all()):
            raise TrainingDivergedError(
                f"{self.site.name}: local training diverged in round {round_number} (its update is not finite); "
                "lower the learning rate"
            )
        update = self.privacy.before_protect(update, torch_generator(self.seed, "dp-noise", self.index, round_number))
        self.last_sent = update  # the site's own message before protection: its own to keep (a client-seat view)
        with protect_clock.measure():
            message = client.protect(update, self.weight)
        record = ClientRound(site=self.site.name, weight=self.weight, steps=steps, train_seconds=train_clock.seconds,
                             protect_seconds=protect_clock.seconds, reveal_seconds=0.0, bytes_up=message.nbytes)
        return message, record

    def predict(self, global_vector: torch.Tensor) -> torch.Tensor:
        """Class probabilities (per pixel: segmentation) of the global model, with this site's private state."""
        self.state.set(global_vector)
        self.state.set_private(self.private)
        return predict(self.state.model, self.test_tensors[0], self.training.objective.eval_batch)

    def _local_update(self, global_vector: torch.Tensor, round_number: int) -> tuple[torch.Tensor, int]:
        generator = torch_generator(self.seed, "train", self.index, round_number)
        self.state.set(global_vector)
        self.state.set_private(self.private)
        update, steps = self.strategy.client_update(
            self.state, *self.train_tensors, self.training, generator, loop=self._loop, memory=self.memory
        )
        self.private = self.state.get_private()
        return update, steps


def next_global(
    global_vector: torch.Tensor, aggregate: Aggregate, client: ClientRole, strategy: Strategy,
    privacy: PrivacyMechanism, device: torch.device,
) -> tuple[torch.Tensor, float]:
    """The sites' step after the server's sum: reveal the mean update and move the global model.

    Returns:
        The next global model and the seconds the reveal took.
    """
    clock = Stopwatch(device)
    with clock.measure():
        mean_update = privacy.after_reveal(client.reveal(aggregate), aggregate.n_messages)
    return strategy.server_update(global_vector, mean_update.to(device)), clock.seconds
