"""Canary clients: extra participants whose update is a fixed direction the auditor chose.

They take part in a federation exactly as a site does (sampled like one, their
update through the privacy mechanism and the protocol), but they hold no data:
every round they send their canary update. What a released model shows of
those directions is the one-shot empirical privacy estimate (Andrew et al.
2024, :mod:`attacks.one_shot`).
"""

from __future__ import annotations

import torch

from fedsecure.devices import Stopwatch
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.trace import ClientRound
from fedsecure.secure.protocol import ClientRole, Message
from fedsecure.seeding import torch_generator


class CanaryClient:
    """One canary client.

    Args:
        index: its position among the federation's participants (after the sites).
        update: the update it sends every round (flat, the model's length).
        n_train: the size it declares (its weight where weights follow site sizes).
        privacy: the federation's privacy mechanism, calibrated.
        seed: the federation's root seed.
    """

    def __init__(self, index: int, update: torch.Tensor, n_train: int, privacy: PrivacyMechanism, seed: int) -> None:
        self.index = index
        self.update = update
        self.n_train = n_train
        self.privacy = privacy
        self.seed = seed

    @property
    def name(self) -> str:
        """How the trace names it."""
        return f"canary-{self.index}"

    @property
    def weight(self) -> float:
        """Its weight in the average, as a site of its declared size gets."""
        return self.privacy.site_weight(self.n_train)

    def message(self, round_number: int, client: ClientRole) -> tuple[Message, ClientRound]:
        """Its canary update, privatized and protected as a site's would be."""
        clock = Stopwatch(self.update.device)
        update = self.privacy.before_protect(
            self.update.clone(), torch_generator(self.seed, "dp-noise", self.index, round_number)
        )
        with clock.measure():
            message = client.protect(update, self.weight)
        record = ClientRound(site=self.name, weight=self.weight, steps=0, train_seconds=0.0,
                             protect_seconds=clock.seconds, reveal_seconds=0.0, bytes_up=message.nbytes)
        return message, record
