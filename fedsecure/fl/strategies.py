"""Federated strategies: what a client does locally and how the server moves the global model.

Every strategy exchanges the same kind of message, a model *update* (the
site's local model minus the global model it received, over the shared
state), so that any strategy composes with any aggregation protocol and any
privacy wrapper. Strategies differ in two places only:

* :meth:`Strategy.client_update`: local training (FedProx adds a proximal
  term; FedSGD takes a single full-batch gradient step);
* :meth:`Strategy.server_update`: how the weighted mean update moves the
  global model (FedAdam treats it as a pseudo-gradient for a server Adam);

plus :meth:`Strategy.private_names`, the state that never leaves a site (FedBN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn
from typing_extensions import override

from fedsecure.fl.state import ModelState
from fedsecure.fl.training import (
    LocalTraining,
    RegularizerFn,
    full_batch_gradient,
    train_local,
)
from fedsecure.models import normalization_state_names
from fedsecure.registry import Registry

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@dataclass
class Strategy:
    """Base strategy: FedAvg's client and server behaviour (McMahan et al. 2017)."""

    # Whether local training is plain mini-batch SGD on the data loss, the loop
    # sample-level DP-SGD replaces; strategies that change that loop say False.
    plain_local_sgd: ClassVar[bool] = True
    # Whether the update is one full-batch gradient step (-lr * gradient), as an attacker replays it.
    one_full_batch_step: ClassVar[bool] = False

    def private_names(self, model: nn.Module) -> set[str]:
        """``state_dict`` names each site keeps to itself (none for FedAvg)."""
        return set()

    def start(self, global_vector: torch.Tensor) -> None:
        """Reset any server-side state before round 1."""

    def client_update(
        self,
        state: ModelState,
        images: torch.Tensor,
        labels: torch.Tensor,
        training: LocalTraining,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, int]:
        """Train the model held by ``state`` (already loaded with the global model) locally.

        Returns:
            The update (local shared state minus global) and the number of local steps.
        """
        start = state.get()
        steps = train_local(state.model, images, labels, training, generator, self._regularizer(state))
        return state.get() - start, steps

    def server_update(self, global_vector: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        """The next global model from the weighted mean of the sites' updates."""
        return global_vector + mean_update

    def server_state(self) -> dict[str, torch.Tensor]:
        """What :meth:`server_update` carries from round to round (to keep it between processes)."""
        return {}

    def load_server_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`server_state` returned."""

    def _regularizer(self, state: ModelState) -> RegularizerFn | None:
        return None


@STRATEGIES.register("fedavg")
@dataclass
class FedAvg(Strategy):
    """FedAvg: local epochs of SGD, server averages the updates weighted by sample counts."""


@STRATEGIES.register("fedsgd")
@dataclass
class FedSGD(Strategy):
    """FedSGD: each site takes one gradient step on its whole local data per round.

    With every site participating this is full-batch gradient descent on the
    pooled data. The update a site sends is ``-lr * gradient`` (the gradient
    itself is recoverable by anyone who knows ``lr``, e.g. the server).
    """

    plain_local_sgd: ClassVar[bool] = False
    one_full_batch_step: ClassVar[bool] = True

    @override
    def client_update(self, state, images, labels, training, generator):
        start = state.get()
        gradients = full_batch_gradient(state.model, images, labels, training.batch_size, training.objective)
        with torch.no_grad():
            for parameter, gradient in zip(state.model.parameters(), gradients, strict=True):
                parameter -= training.lr * gradient
        return state.get() - start, 1


@STRATEGIES.register("fedprox")
@dataclass
class FedProx(Strategy):
    """FedProx (Li et al. 2020): local loss plus ``mu/2 * ||w - w_global||^2``.

    Args:
        mu: strength of the proximal term (0 recovers FedAvg).
    """

    plain_local_sgd: ClassVar[bool] = False

    mu: float = 0.01

    def _regularizer(self, state: ModelState) -> RegularizerFn | None:
        if self.mu == 0:
            return None
        # The model holds the global weights when local training starts.
        anchors = [p.detach().clone() for p in state.model.parameters()]

        def proximal(model: nn.Module) -> torch.Tensor:
            squared_distances = (((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchors, strict=True))
            return 0.5 * self.mu * sum(squared_distances)

        return proximal


@STRATEGIES.register("fedadam")
@dataclass
class FedAdam(Strategy):
    """FedAdam (Reddi et al. 2021): the mean update is a pseudo-gradient for a server Adam.

    Args:
        server_lr: the server's step size (eta).
        beta1: first-moment decay.
        beta2: second-moment decay.
        tau: adaptivity floor added to the root second moment.
    """

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    _m: torch.Tensor | None = field(default=None, init=False, repr=False)
    _v: torch.Tensor | None = field(default=None, init=False, repr=False)

    @override
    def start(self, global_vector: torch.Tensor) -> None:
        self._m = torch.zeros_like(global_vector)
        self._v = torch.full_like(global_vector, self.tau**2)

    @override
    def server_update(self, global_vector: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        if self._m is None or self._v is None:
            raise RuntimeError("FedAdam.start() must be called before the first round")
        self._m = self.beta1 * self._m + (1 - self.beta1) * mean_update
        self._v = self.beta2 * self._v + (1 - self.beta2) * mean_update**2
        return global_vector + self.server_lr * self._m / (self._v.sqrt() + self.tau)

    @override
    def server_state(self) -> dict[str, torch.Tensor]:
        if self._m is None or self._v is None:
            raise RuntimeError("FedAdam.start() must be called before its state is saved")
        return {"m": self._m.detach().cpu().clone(), "v": self._v.detach().cpu().clone()}

    @override
    def load_server_state(self, state: dict[str, torch.Tensor]) -> None:
        self._m, self._v = state["m"].clone(), state["v"].clone()


@STRATEGIES.register("fedbn")
@dataclass
class FedBN(Strategy):
    """FedBN (Li et al. 2021): FedAvg on everything but the normalization layers.

    Each site keeps its own normalization parameters and statistics
    (BatchNorm, and GroupNorm/LayerNorm affine parameters, which play the same
    role of absorbing a scanner's intensity shift). The model is therefore
    personalised: each site evaluates the shared layers with its own
    normalization.
    """

    @override
    def private_names(self, model: nn.Module) -> set[str]:
        return normalization_state_names(model)

