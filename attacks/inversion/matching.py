"""The optimization shared by every inversion: find images whose replay matches the observation.

An attack is a choice of

* what is replayed: the gradient of the mean loss over all images (DLG, iDLG,
  Inverting Gradients; for a multi-step update the observed pseudo-gradient
  stands in), or the whole unrolled local training (FedAvg-update inversion);
* how a replay is compared with the observation: squared L2 (DLG) or cosine
  distance (Geiping et al. 2020, insensitive to the update's scale);
* an image prior: total variation, weighted;
* labels: optimized jointly as soft labels (DLG) or recovered analytically
  first (:mod:`attacks.inversion.labels`); a mask (a dense loss) is always
  optimized jointly, one soft label per pixel, since no analytic recovery exists;
* the optimizer: L-BFGS (DLG) or Adam on signed gradients with a box
  constraint (Geiping et al.).

Every restart of every observation is one candidate; all candidates run as one
``vmap``-batched computation. Adam and signed gradients act element-wise, so
batching does not change any candidate's path; L-BFGS couples the
candidates through its shared line search (each still minimizes its own loss).
The restart with the lowest final objective is kept per observation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from typing_extensions import override

from attacks.inversion.base import InversionAttack, Reconstruction
from attacks.inversion.image_space import PixelSpace, PrincipalSpace
from attacks.inversion.labels import recover_labels
from attacks.inversion.observation import Observation
from attacks.inversion.replay import LocalTrainingReplay, Tensors, flatten

Replay = Literal["gradient", "update"]
Distance = Literal["l2", "cosine"]
Optimizer = Literal["lbfgs", "adam"]
Labels = Literal["joint", "recovered"]
Init = Literal["random", "prior"]
#: The matching loss of (images or latent coefficients, labels), one value per candidate.
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels (voxels), summed over the spatial axes, per candidate.

    (K, B, C, H, W) or (K, B, C, D, H, W) -> (K,).
    """
    spatial = images.dim() - 3
    total = images.new_zeros(images.shape[0])
    for axis in range(images.dim() - spatial, images.dim()):
        total = total + images.diff(dim=axis).abs().flatten(1).mean(1)
    return total


def l2_distance(replayed: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """Squared L2 distance relative to the observation's squared norm, per candidate: (K, D), (K, D) -> (K,).

    Dividing by ``|observed|^2`` leaves DLG's minimizers unchanged but makes the
    loss scale-free: an image the model already fits well has a tiny gradient,
    and an absolute loss would stop L-BFGS's tolerances long before a match.
    """
    return (replayed - observed).pow(2).sum(1) / observed.pow(2).sum(1).clamp_min(1e-30)


def cosine_distance(replayed: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` per candidate: (K, D), (K, D) -> (K,)."""
    return 1 - torch.nn.functional.cosine_similarity(replayed, observed, dim=1, eps=1e-12)


DISTANCES = {"l2": l2_distance, "cosine": cosine_distance}


@dataclass(frozen=True)
class GradientMatching(InversionAttack):
    """An optimization-based inversion; the named attacks are configurations of it.

    Attributes:
        replay: "gradient" or "update" (see the module docstring).
        distance: "l2" or "cosine".
        tv: weight of the total-variation prior.
        optimizer: "lbfgs" or "adam".
        labels: "joint" or "recovered".
        iterations: optimizer iterations.
        restarts: random initialisations per observation; the best match is kept.
        lr: optimizer step size.
        signed: use the sign of the image gradient (Geiping et al.'s Adam variant).
        init: "random" (uniform pixels) or "prior": the mean of the attacker's
            public images plus 10% noise (a knowledgeable attacker starts from
            what it knows; random without public images).
        subspace: search the span of this many principal components of the
            attacker's public images instead of raw pixels (0: pixels; see
            :mod:`attacks.inversion.image_space`). Needs public images.
        prior_weight: weight of the subspace's Gaussian density (a MAP
            estimate: the reconstruction departs from the public images' model
            only as far as the observation demands).
        seed: seed of the random initialisations.
    """

    replay: Replay = "gradient"
    distance: Distance = "cosine"
    tv: float = 0.0
    optimizer: Optimizer = "adam"
    labels: Labels = "recovered"
    iterations: int = 1000
    restarts: int = 4
    lr: float = 0.1
    signed: bool = True
    init: Init = "random"
    subspace: int = 0
    prior_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.restarts < 1:
            raise ValueError("iterations and restarts must be >= 1")
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown distance {self.distance!r}")

    @override
    def reconstruct_all(
        self, observations: Sequence[Observation], public_images: torch.Tensor | None = None
    ) -> list[Reconstruction]:
        results: dict[int, Reconstruction] = {}
        for group in _groups(observations):
            for index, result in zip(group, self._solve([observations[i] for i in group], public_images), strict=True):
                results[index] = result
        return [results[i] for i in range(len(observations))]

    def _solve(self, observations: list[Observation], public_images: torch.Tensor | None) -> list[Reconstruction]:
        started = time.perf_counter()
        first = observations[0]
        names = sorted(first.update)
        replay = LocalTrainingReplay(first.model, names, first.loss)
        device = next(first.model.parameters()).device
        n_obs, n_restarts, n_images = len(observations), self.restarts, first.n_images
        candidates = n_obs * n_restarts

        # Candidate k = observation k // restarts, restart k % restarts.
        def stacked(values: list[Tensors]) -> Tensors:
            return {n: torch.stack([v[n] for v in values]).repeat_interleave(n_restarts, 0).to(device) for n in names}

        params = stacked(
            [{n: p.detach() for n, p in o.model.named_parameters() if n in first.update} for o in observations]
        )
        observed_values = [o.update if self.replay == "update" else o.pseudo_gradient() for o in observations]
        observed = flatten(stacked([{n: v[n].detach() for n in names} for v in observed_values]), names)

        low, high = first.value_range
        space = self._space(low, high, public_images, device)
        generator = torch.Generator().manual_seed(self.seed)
        shape = (candidates, n_images, *first.image_shape)
        start = public_images.float().mean(0).cpu() if self.init == "prior" and public_images is not None else None
        latent = space.initial(shape, generator, start).to(device)
        joint = self.labels == "joint" or bool(first.label_shape)  # no analytic recovery of a mask exists
        if joint:
            labels = torch.randn((candidates, n_images, first.n_classes, *first.label_shape), generator=generator)
            labels = labels.to(device)
        else:
            recovered = torch.stack([recover_labels(o, public_images) for o in observations])
            labels = torch.nn.functional.one_hot(recovered, first.n_classes).float().repeat_interleave(n_restarts, 0)
            labels = labels.to(device)

        if self.replay == "update":
            training = first.training
            batched = replay.batched(lambda p, x, y: replay.update(p, x, y, training))
        else:
            batched = replay.batched(replay.gradient)
        distance = DISTANCES[self.distance]

        def objective(chosen: slice, latent: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            images = space.decode(latent)
            soft_labels = torch.softmax(labels, 2) if joint else labels  # classes: dim 2 of (K, N, C, ...)
            selected = {n: v[chosen] for n, v in params.items()}
            loss = distance(flatten(batched(selected, images, soft_labels), names), observed[chosen])
            if self.tv:
                loss = loss + self.tv * total_variation(images)
            if self.prior_weight:
                loss = loss + self.prior_weight * space.penalty(latent)
            return loss

        if self.optimizer == "lbfgs":
            # L-BFGS's line search and curvature pairs are shared by all its variables, so
            # batched candidates would slow each other down: one candidate at a time.
            for k in range(candidates):
                chosen = slice(k, k + 1)
                latent[chosen], labels[chosen] = self._lbfgs(
                    partial(objective, chosen), latent[chosen], labels[chosen], joint
                )
        else:
            latent, labels = self._adam(partial(objective, slice(None)), latent, labels, space, joint)

        with torch.no_grad():
            final = objective(slice(None), latent, labels).reshape(n_obs, n_restarts)
            best = torch.nan_to_num(final, nan=float("inf")).argmin(1)
            chosen_images = space.decode(latent).reshape(n_obs, n_restarts, n_images, *first.image_shape)
            chosen_labels = labels.argmax(2).reshape(n_obs, n_restarts, n_images, *first.label_shape)
        seconds = time.perf_counter() - started
        return [
            Reconstruction(
                images=chosen_images[k, best[k]].clamp(low, high).cpu(),
                labels=chosen_labels[k, best[k]].cpu(),
                objective=float(final[k, best[k]]),
                iterations=self.iterations,
                seconds=seconds,
            )
            for k in range(n_obs)
        ]

    @override
    def prior_description(self, public_images: torch.Tensor | None) -> str:
        parts = []
        if self.subspace and public_images is not None:
            k = min(self.subspace, len(public_images))
            parts.append(f"the span of the {k} leading principal components of {len(public_images)} public images")
            if self.prior_weight:
                parts.append(f"their Gaussian density (weight {self.prior_weight:g})")
        else:
            parts.append("raw pixels in the value range")
        if self.tv:
            parts.append(f"total variation (weight {self.tv:g})")
        if self.init == "prior" and public_images is not None:
            parts.append("starting from the mean public image")
        return ", ".join(parts)

    def _space(
        self, low: float, high: float, public_images: torch.Tensor | None, device: torch.device
    ) -> PixelSpace | PrincipalSpace:
        if not self.subspace:
            return PixelSpace(low, high)
        if public_images is None or len(public_images) < 2:
            raise ValueError("a principal-subspace search needs the attacker's public images")
        space = PrincipalSpace.fit(public_images, self.subspace)
        return PrincipalSpace(mean=space.mean.to(device), basis=space.basis.to(device))

    def _variables(self, latent: torch.Tensor, labels: torch.Tensor, joint: bool) -> list[torch.Tensor]:
        latent.requires_grad_(True)
        if joint:
            labels.requires_grad_(True)
            return [latent, labels]
        return [latent]

    def _adam(
        self, objective: Objective, images: torch.Tensor, labels: torch.Tensor, space: PixelSpace | PrincipalSpace,
        joint: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = images.clone(), labels.clone()
        variables = self._variables(images, labels, joint)
        optimizer = torch.optim.Adam(variables, lr=self.lr)
        # Geiping et al.'s schedule: divide the step by 10 at 3/8, 5/8 and 7/8 of the run.
        milestones = [int(self.iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
        for _ in range(self.iterations):
            optimizer.zero_grad(set_to_none=True)
            objective(images, labels).sum().backward()
            if self.signed:
                for variable in variables:
                    if variable.grad is not None:  # None only for a variable the objective ignores
                        variable.grad.sign_()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                space.project(images)
        return images.detach(), labels.detach()

    def _lbfgs(
        self, objective: Objective, images: torch.Tensor, labels: torch.Tensor, joint: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = images.clone(), labels.clone()
        variables = self._variables(images, labels, joint)
        optimizer = torch.optim.LBFGS(
            variables, lr=self.lr, max_iter=self.iterations, history_size=100,
            tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = objective(images, labels).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        return images.detach(), labels.detach()


def _groups(observations: Sequence[Observation]) -> list[list[int]]:
    """Indices of observations that can be batched together (same shapes and local training)."""
    groups: dict[tuple, list[int]] = {}
    for index, o in enumerate(observations):
        parameters = dict(o.model.named_parameters())
        key = (
            type(o.model), o.n_images, o.image_shape, o.n_classes, o.training, o.value_range, o.loss,
            tuple((n, tuple(parameters[n].shape)) for n in sorted(o.update)),
        )
        groups.setdefault(key, []).append(index)
    return list(groups.values())
