"""Federated strategies: what a client does locally and how the server moves the global model.

Every strategy exchanges the same kind of message, a model *update* (the
site's local model minus the global model it received, over the shared
state; SCAFFOLD appends its control-variate update), so that any strategy
composes with any aggregation protocol and any privacy wrapper. Strategies
differ in a few places only:

* :meth:`Strategy.gradient_correction`: a data-independent term added to each
  local step's gradient (FedProx's proximal pull, SCAFFOLD's control variates);
* ``one_full_batch_step``: local work is one gradient step on the whole local data (FedSGD);
* :meth:`Strategy.message`: what the site sends from its update;
* :meth:`Strategy.server_update`: how the weighted mean message moves the
  global model (FedAdam and FedYogi treat it as a pseudo-gradient for a server optimizer);

plus :meth:`Strategy.private_names`, the state that never leaves a site (FedBN).

How each local step's gradient is taken is not the strategy's business: a
:class:`~fedsecure.fl.privacy_hooks.LocalLoop` (plain SGD, or Opacus's DP-SGD)
runs the steps and calls the strategy's correction after its own clipping and
noise, which is why every strategy composes with sample-level DP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from typing_extensions import override

from fedsecure.fl.state import ModelState
from fedsecure.fl.training import GradientCorrection, LocalTraining, plain_loop
from fedsecure.models import normalization_state_names
from fedsecure.registry import Registry

if TYPE_CHECKING:
    from fedsecure.fl.privacy_hooks import LocalLoop

SiteMemory = dict[str, torch.Tensor]
"""What a strategy keeps at a site between rounds (SCAFFOLD's control variate): the site's own, never sent."""

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@dataclass
class Strategy:
    """Base strategy: FedAvg's client and server behaviour (McMahan et al. 2017)."""

    # Whether the local work is one full-batch gradient step (-lr * gradient), as an attacker replays it.
    one_full_batch_step: ClassVar[bool] = False

    def private_names(self, model: nn.Module) -> set[str]:
        """``state_dict`` names each site keeps to itself (none for FedAvg)."""
        return set()

    def message_length(self, numel: int) -> int:
        """Values in a site's message for a shared state of ``numel`` values (the update alone for most)."""
        return numel

    def start(self, global_vector: torch.Tensor, participation: float = 1.0) -> None:
        """Reset any server-side state before round 1 (``participation``: the expected share of sites per round)."""

    def client_update(
        self,
        state: ModelState,
        images: torch.Tensor,
        labels: torch.Tensor,
        training: LocalTraining,
        generator: torch.Generator,
        *,
        loop: LocalLoop = plain_loop,
        memory: SiteMemory | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Train the model held by ``state`` (already loaded with the global model) locally.

        Args:
            state: the site's model, holding the global model and the site's private entries.
            images: the site's training images.
            labels: their labels (classes or masks).
            training: the local training settings.
            generator: the round's batch-order generator (plain loop).
            loop: how each step's gradient is taken (plain SGD, or a privacy mechanism's DP-SGD).
            memory: what this strategy keeps at this site between rounds (updated in place).

        Returns:
            The message (the local shared state minus the global one, and whatever the strategy
            appends) and the number of local steps.
        """
        memory = {} if memory is None else memory
        start = state.get()
        correction = self.gradient_correction(state, memory)
        steps = loop(state.model, images, labels, training, generator, correction, self.one_full_batch_step)
        return self.message(state.get() - start, steps, training, memory), steps

    def gradient_correction(self, state: ModelState, memory: SiteMemory) -> GradientCorrection | None:
        """The term added to each local step's gradient (None: none); ``state`` holds the global model."""
        return None

    def message(self, update: torch.Tensor, steps: int, training: LocalTraining, memory: SiteMemory) -> torch.Tensor:
        """What the site sends for its local ``update`` after ``steps`` local steps."""
        return update

    def server_update(self, global_vector: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        """The next global model from the weighted mean of the sites' messages."""
        return global_vector + mean_update

    def server_state(self) -> dict[str, torch.Tensor]:
        """What :meth:`server_update` carries from round to round (to keep it between processes)."""
        return {}

    def load_server_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`server_state` returned."""


def add_to_gradients(model: nn.Module, terms: dict[str, torch.Tensor], scale: float = 1.0) -> None:
    """``p.grad += scale * terms[name]`` for each parameter of ``model`` that ``terms`` names and that has a grad."""
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and name in terms:
            parameter.grad.add_(terms[name].to(parameter.grad.device), alpha=scale)


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

    one_full_batch_step: ClassVar[bool] = True


@STRATEGIES.register("fedprox")
@dataclass
class FedProx(Strategy):
    """FedProx (Li et al. 2020): local loss plus ``mu/2 * ||w - w_global||^2``.

    Args:
        mu: strength of the proximal term (0 recovers FedAvg).
    """

    mu: float = 0.01

    @override
    def gradient_correction(self, state: ModelState, memory: SiteMemory) -> GradientCorrection | None:
        if self.mu == 0:
            return None
        # The model holds the global weights when local training starts: the proximal term's anchors.
        anchors = {name: p.detach().clone() for name, p in state.model.named_parameters()}

        def proximal(model: nn.Module) -> None:
            # The gradient of mu/2 * ||w - w_global||^2.
            add_to_gradients(model, {name: p.detach() - anchors[name] for name, p in model.named_parameters()},
                             self.mu)

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
    def start(self, global_vector: torch.Tensor, participation: float = 1.0) -> None:
        self._m = torch.zeros_like(global_vector)
        self._v = torch.full_like(global_vector, self.tau**2)

    @override
    def server_update(self, global_vector: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        if self._m is None or self._v is None:
            raise RuntimeError("FedAdam.start() must be called before the first round")
        self._m = self.beta1 * self._m + (1 - self.beta1) * mean_update
        self._v = self._second_moment(self._v, mean_update**2)
        return global_vector + self.server_lr * self._m / (self._v.sqrt() + self.tau)

    def _second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * squared

    @override
    def server_state(self) -> dict[str, torch.Tensor]:
        if self._m is None or self._v is None:
            raise RuntimeError("FedAdam.start() must be called before its state is saved")
        return {"m": self._m.detach().cpu().clone(), "v": self._v.detach().cpu().clone()}

    @override
    def load_server_state(self, state: dict[str, torch.Tensor]) -> None:
        self._m, self._v = state["m"].clone(), state["v"].clone()


@STRATEGIES.register("fedyogi")
@dataclass
class FedYogi(FedAdam):
    """FedYogi (Reddi et al. 2021): FedAdam whose second moment moves additively (Yogi), not multiplicatively.

    ``v <- v - (1 - beta2) * d^2 * sign(v - d^2)``: the effective step size cannot
    collapse after a few large updates, which makes it steadier on heterogeneous sites.
    """

    @override
    def _second_moment(self, v: torch.Tensor, squared: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.beta2) * squared * torch.sign(v - squared)


@STRATEGIES.register("scaffold")
@dataclass
class Scaffold(Strategy):
    """SCAFFOLD (Karimireddy et al. 2020), option II: control variates correct each site's drift.

    A site steps with ``gradient + c - c_i``, where ``c`` is the server's control variate (every
    site reveals the same aggregate, so every site holds it) and ``c_i`` its own, kept in the site's
    memory. It sends its model update followed by its control-variate update
    ``c_i+ - c_i`` with ``c_i+ = c_i - c + (x - y_i) / (K lr)``; the global model moves by the mean
    model update (global step 1) and ``c`` by ``participation`` times the mean control update.
    Both halves are one message: secure aggregation hides both, client-level DP clips and noises
    both together (its sensitivity covers the whole message), and under sample-level DP both are
    post-processing of DP-SGD's noised steps. The means are weighted like every other message.
    """

    participation: float = field(default=1.0, init=False)
    _c: torch.Tensor | None = field(default=None, init=False, repr=False)

    @override
    def message_length(self, numel: int) -> int:
        return 2 * numel

    @override
    def start(self, global_vector: torch.Tensor, participation: float = 1.0) -> None:
        self._c = torch.zeros_like(global_vector)
        self.participation = participation

    def _control(self) -> torch.Tensor:
        if self._c is None:
            raise RuntimeError("Scaffold.start() must be called before the first round")
        return self._c

    @override
    def gradient_correction(self, state: ModelState, memory: SiteMemory) -> GradientCorrection | None:
        c = self._control().to(next(state.model.parameters()).device)
        own = memory.setdefault("control", torch.zeros_like(c))
        drift = state.split(c - own.to(c.device))

        def correct(model: nn.Module) -> None:
            add_to_gradients(model, drift)

        return correct

    @override
    def message(self, update: torch.Tensor, steps: int, training: LocalTraining, memory: SiteMemory) -> torch.Tensor:
        c = self._control().to(update.device)
        own = memory["control"].to(update.device)
        fresh = own - c - update / (steps * training.lr)
        memory["control"] = fresh
        return torch.cat([update, fresh - own])

    @override
    def server_update(self, global_vector: torch.Tensor, mean_update: torch.Tensor) -> torch.Tensor:
        n = global_vector.numel()
        self._c = self._control().to(mean_update.device) + self.participation * mean_update[n:]
        return global_vector + mean_update[:n]

    @override
    def server_state(self) -> dict[str, torch.Tensor]:
        return {"c": self._control().detach().cpu().clone()}

    @override
    def load_server_state(self, state: dict[str, torch.Tensor]) -> None:
        self._c = state["c"].clone()


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

