"""Canary clients over a real run: the one-shot empirical privacy estimate (Andrew et al. 2024).

The scenario's federation runs once more with ``clients`` canary clients
added, each sending its own random direction every round it is sampled
(:mod:`fedsecure.fl.canary_clients`); everything else (sites, sampling,
clipping, noise, protocol) is the scenario's. From the released model alone,
the change over the run is scored against each canary's direction and against
``unseen`` directions that never took part (:mod:`attacks.one_shot`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch

from attacks.one_shot import one_shot_estimate
from fedsecure.data.federated import FederatedData
from fedsecure.fl.federation import Federation
from fedsecure.report.mechanism_finding import CanaryClientsFinding
from fedsecure.secure.plain import PlainAggregation


def audit_canary_clients(
    data: FederatedData, build_federation: Callable[..., Federation], *, clients: int, unseen: int, norm: float,
    delta: float, confidence: float, seed: int,
) -> CanaryClientsFinding:
    """Run the federation with canary clients and estimate epsilon from the released model.

    Args:
        data: the sites.
        build_federation: the scenario's federation on ``data`` (keyword overrides go to :class:`Federation`).
        clients: canary clients added.
        unseen: random directions that take no part (the null scores).
        norm: the norm of each canary update (the clip, with client-level DP).
        delta: the delta of the estimate.
        confidence: the estimate's interval.
        seed: the directions' seed.
    """
    started = time.perf_counter()
    with warnings.catch_warnings():
        # The scenario's own run warns about its settings; plaintext sums here are the audit's choice (see below).
        warnings.simplefilter("ignore")
        length = build_federation(data).state.numel
        generator = torch.Generator().manual_seed(seed)
        directions = _unit_rows(clients + unseen, length, generator)
        # The released model is the same whether the sums were taken under CKKS or in plaintext (CKKS's
        # approximation error aside): plaintext spares encrypting every canary's update every round.
        federation = build_federation(
            data, canary_updates=directions[:clients] * norm, keep_global_models=False, protocol=PlainAggregation(),
        )
        initial = federation.state.get().detach().cpu().double()
        result = federation.run()
    assert result.trace.final_global is not None
    change = result.trace.final_global.double() - initial
    cosines = (directions.double() @ change / change.norm().clamp_min(1e-300)).numpy()
    estimate = one_shot_estimate(cosines[:clients], cosines[clients:], delta, confidence, seed=seed)
    privacy = result.trace.privacy
    public = next((g for g in privacy.by_adversary if g.party == "public"), None) if privacy else None
    return CanaryClientsFinding(
        clients=clients, unseen=unseen, dimension=length, norm=norm, rounds=len(result.trace.rounds),
        epsilon=estimate.epsilon, low=estimate.low, high=estimate.high, confidence=confidence, delta=delta,
        accountant_epsilon=public.epsilon if public is not None else None,
        inserted_mean=estimate.inserted_mean, inserted_std=estimate.inserted_std,
        unseen_mean=estimate.unseen_mean, unseen_std=estimate.unseen_std,
        wall_seconds=time.perf_counter() - started,
    )


def _unit_rows(rows: int, length: int, generator: torch.Generator) -> torch.Tensor:
    directions = torch.randn(rows, length, generator=generator, dtype=torch.float64)
    return (directions / directions.norm(dim=1, keepdim=True)).float()



