"""The membership audit: reference federations, attacks from every seat, a one-run canary audit.

Threat model: the attacker holds candidate images with their labels and the
training recipe (the spec), with which it trains its own reference
federations, and what its seat observes of the target federation
(:mod:`fedsecure.audit.seat_signals`):

* ``external``: the released final model;
* ``server``: each site's local models of the first and last rounds (the
  model it sent plus the site's plaintext update); under SecAgg+ the global
  models it unmasked (no site's update); under CKKS the released model only;
* ``client``: site ``attacker_site``, holding the global model of every round;
  it targets the other sites' patients (it knows its own).

Candidates are every site's training images (members) and every site's
held-out images, test and validation (non-members: same sites, same
scanners, never trained on), so the attack cannot win on a distribution shift
between the two. A signal observed over several rounds (the client's
trajectory) is scored round by round and the scores summed (for LiRA, the
log-likelihood ratios of the rounds, treated as independent).

Reference federations run the scenario's own pipeline (strategy, local
training, DP mechanism) on a random half of the candidates, each site keeping
its own candidates; CKKS and SecAgg+ are replaced by the plain protocol for
them, which yields the same model faster (SecAgg+: within its quantization
error), and the server seat reads of them what the target's server read (no
site's update when it read none). One set of reference federations
serves every seat: each records what every seat observes. Each runs on its
own seed (derived from its membership), never the target's: with seeded noise
the attacker would otherwise replay the target's noise and batch order. Their
logits are cached under ``out_dir/cache/``.

The one-run canary audit (Steinke, Nasr and Jagielski 2023) trains the
scenario's pipeline once more with canaries (held-out images with flipped
labels, the samples a model must memorize to fit), each inserted into its
site's training data with probability 1/2, and bounds epsilon from how well
the canaries' losses tell which were inserted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks.auditing import one_run_audit
from attacks.membership import (
    MEMBERSHIP_ATTACKS,
    MembershipAttack,
    ReferenceOutputs,
    balanced_memberships,
    train_reference_signals,
)
from attacks.membership.signals import loss
from attacks.metrics import membership_scores
from fedsecure.audit.seat_signals import RELEASED, TRAJECTORY, client_signal, seat_signals, server_signal
from fedsecure.config.spec import AuditSpec, MembershipSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.data.splits import Split
from fedsecure.errors import TrainingDivergedError
from fedsecure.fl.federation import Federation
from fedsecure.fl.round_loop import FederationResult
from fedsecure.fl.task import TASKS, Task
from fedsecure.fl.views import SeatViews, external_view, seat_views
from fedsecure.positions import Position
from fedsecure.report.findings import CanaryAuditFinding, ExposedMember, MembershipFinding, RateAtFpr
from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import PROTOCOLS
from fedsecure.seeding import derive_seed, numpy_rng

BASELINE = "loss"
MOST_EXPOSED = 10

BuildFederation = Callable[..., Federation]


class CandidatePool:
    """Every site's training images (members of the target) and held-out images (non-members: test and validation)."""

    def __init__(self, data: FederatedData) -> None:
        splits = [site.train for site in data.sites] + [data.held_out(site) for site in data.sites]
        self.images = np.concatenate([s.images for s in splits])
        self.labels = np.concatenate([s.labels for s in splits])
        n_sites = len(data.sites)
        self.site = np.concatenate([np.full(len(s), k % n_sites) for k, s in enumerate(splits)])
        self.index_in_site = np.concatenate([np.arange(len(s)) for s in splits])
        self.is_member = np.concatenate([np.full(len(s), k < n_sites) for k, s in enumerate(splits)])
        self.site_names = [site.name for site in data.sites]

    def __len__(self) -> int:
        return len(self.labels)

    def federated(self, data: FederatedData, chosen: np.ndarray) -> FederatedData:
        """``data`` with each site's training data replaced by its chosen candidates."""
        sites = []
        for k, site in enumerate(data.sites):
            mine = chosen & (self.site == k)
            sites.append(replace(site, train=Split(images=self.images[mine], labels=self.labels[mine])))
        return replace(data, sites=sites)


def logits_of(
    model: nn.Module, images: np.ndarray, labels: np.ndarray, task: Task, device: torch.device
) -> torch.Tensor:
    """The model's per-sample logits on NumPy (images, labels) (:meth:`Task.sample_logits`), float64 on the CPU.

    The model moves to ``device`` (a released model may come from the Flower server's CPU).
    """
    return task.sample_logits(model.to(device), torch.from_numpy(images).to(device), torch.from_numpy(labels))


def _replica_logits(
    build_federation: BuildFederation, data: FederatedData, images: np.ndarray, labels: np.ndarray, task: Task,
    seed: int,
) -> torch.Tensor | None:
    """Train the scenario's pipeline on ``data`` (the auditor's replica); its released model's logits on ``images``.

    See :func:`_replica` for how the replica runs; None when its training diverged.
    """
    federation, result = _replica(build_federation, data, seed, keep_messages="none", keep_global_models=False)
    if result is None:
        return None
    return logits_of(external_view(result).released_model, images, labels, task, federation.device)


def _replica(
    build_federation: BuildFederation, data: FederatedData, seed: int, **keep: Any
) -> tuple[Federation, FederationResult | None]:
    """Train the scenario's pipeline on ``data`` (the attacker's or auditor's replica).

    The replica runs the plain protocol (CKKS yields the same model bit for bit)
    on its own ``seed`` (batch order, participation and seeded noise differ
    from the target's) and keeps what ``keep`` asks of its trace. Its warnings are silenced: they
    repeat the scenario's, which were already shown, or concern only the replica's protocol. A
    replica whose training diverges (heavy DP noise can do that) gives no result.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        federation = build_federation(data, protocol=PlainAggregation(), evaluate_every=0, seed=seed, **keep)
        try:
            return federation, federation.run()
        except TrainingDivergedError:
            return federation, None


def audit_membership(
    spec: AuditSpec,
    scenario: ScenarioSpec,
    data: FederatedData,
    build_federation: BuildFederation,
    target: SeatViews,
    device: torch.device,
    cache_dir: Path,
    on_reference: Callable[[int], None] | None = None,
) -> tuple[list[MembershipFinding], CanaryAuditFinding | None]:
    """Run ``[attacks] membership`` against one scenario from every seat asked for, and its canary audit.

    Args:
        spec: the audit spec (``spec.attacks.membership`` must be set).
        scenario: the scenario whose pipeline the reference models reuse.
        data: the federated data.
        build_federation: the scenario's federation on given data, with keyword overrides.
        target: every seat's view of the scenario's federation.
        device: where models run.
        cache_dir: where reference models' logits are cached.
        on_reference: progress, called as each reference model is ready.

    Returns:
        One finding per attack (``method``, then the loss baseline) and position, and the canary
        audit (None without canaries).
    """
    settings = spec.attacks.membership
    assert settings is not None
    pool = CandidatePool(data)
    task = TASKS.get(spec.data.task)
    labels = torch.from_numpy(task.attack_labels(pool.labels))
    asked = settings.positions_on(len(data.sites))
    target_signals = seat_signals(target, asked, pool.images, pool.site, pool.site_names, device, pool.labels, task)
    attacker = pool.site_names[settings.attacker_site]
    # Why the server may hold the released model only: secure aggregation, or no global model kept to rebuild from.
    protocol = {"ckks": "CKKS", "secagg": "SecAgg+"}.get(scenario.protocol, scenario.protocol)
    if not target.server.reads_sum:
        server_blind = f"under {protocol} the server sees no site's update and no intermediate model"
    elif PROTOCOLS.get(scenario.protocol).hides_updates:
        server_blind = f"under {protocol} the server reads only each round's sum, and no global model was kept"
    else:
        server_blind = "no global model was kept to rebuild the sites' models from"
    # What a reference federation (plain, for speed) must show the server seat: what the target's server read
    # (the sites' updates of the first and last rounds, kept for it; else the global models, kept in any case).
    server_reads_updates = target.server.sees_plaintext

    def train_and_observe(chosen: np.ndarray) -> dict[str, torch.Tensor] | None:
        seed = derive_seed(spec.seed, "reference", scenario.name, hashlib.sha256(chosen.tobytes()).hexdigest())
        federation, result = _replica(
            build_federation, pool.federated(data, chosen), seed,
            keep_messages="ends" if Position.SERVER in asked and server_reads_updates else "none",
            keep_global_models=Position.SERVER in asked or Position.CLIENT in asked,
        )
        if result is None:
            return None
        views = seat_views(result, federation.state, federation.recipe, federation.server_private, attacker)
        return seat_signals(
            views, asked, pool.images, pool.site, pool.site_names, federation.device, pool.labels, task,
            server_reads_updates=server_reads_updates,
        )

    attacks: list[MembershipAttack] = [settings.attack()]
    if settings.method != BASELINE:
        attacks.append(MEMBERSHIP_ATTACKS.get(BASELINE)())
    references: dict[str, ReferenceOutputs] | None = None
    reference_seconds = 0.0
    if any(a.needs_references for a in attacks):
        started = time.perf_counter()
        # What a reference model depends on: the training recipe and data, this scenario (not the others), the seats.
        recipe = spec.model_dump_json(include={"seed", "data", "model", "federation"})
        seats = ",".join(p.value for p in asked) + f";server-reads-updates={server_reads_updates}"
        key = hashlib.sha256(
            f"{recipe}|{scenario.model_dump_json()}|{data.sha256()}|{seats}|{TRAJECTORY}".encode()
        ).hexdigest()
        members = balanced_memberships(
            len(pool), settings.shadow_models, numpy_rng(spec.seed, "references", scenario.name)
        )
        references = train_reference_signals(
            train_and_observe, members, labels, cache=cache_dir / f"membership-{scenario.name}", key=key,
            on_model=on_reference,
        )
        reference_seconds = time.perf_counter() - started
    findings = []
    for position in asked:
        for attack in attacks:
            names = _signal_names(position, target_signals)
            if attack.needs_references:
                assert references is not None
                names = [n for n in names if n in references]
            if not names:  # the references observed none of what the target's seat did (they all stopped early)
                findings.append(MembershipFinding(
                    method=MEMBERSHIP_ATTACKS.name_of(type(attack)), position=position, status="skipped",
                    reason="no reference federation observed what this seat observed of the target",
                    confidence=settings.confidence,
                ))
                continue
            chosen = pool.site != settings.attacker_site if position is Position.CLIENT else np.ones(len(pool), bool)
            findings.append(_finding(
                attack, position, settings, references, reference_seconds, target_signals, names, labels, pool,
                chosen, _observed_text(position, names, attacker, data, server_blind),
            ))
    canary = None
    if settings.canaries:
        canary = _canary_audit(spec, scenario, data, build_federation, settings, canary_delta(scenario))
        if on_reference is not None:
            on_reference(settings.shadow_models)  # the canary run is one more federation
    return findings, canary


def _signal_names(position: Position, signals: dict[str, torch.Tensor]) -> list[str]:
    """The signals one seat observes (the client's trajectory in round order, the released model last)."""
    if position is Position.EXTERNAL:
        return [position.value] if position.value in signals else []
    prefix = f"{position.value}@"
    # A round's signal is "<r>" (a model the seat holds of round r) or, for the server under SecAgg+,
    # "global-<r>" (the unmasked global model it holds in place of the sites' models): in round order.
    rounds = sorted(
        (n[len(prefix):] for n in signals if n.startswith(prefix) and not n.endswith(RELEASED)),
        key=lambda r: int(r.removeprefix("global-")),
    )
    named = client_signal if position is Position.CLIENT else server_signal
    names = [named(r) for r in rounds]
    return names + ([named(RELEASED)] if named(RELEASED) in signals else [])


def _observed_text(position: Position, names: list[str], attacker: str, data: FederatedData, server_blind: str) -> str:
    """What the seat's attack scored with, in words; where it holds the released model only, why."""
    if position is Position.EXTERNAL:
        return "the released model"
    rounds = [n.split("@")[1] for n in names if not n.endswith(RELEASED)]
    if position is Position.SERVER:
        if not rounds:
            return f"the released model only: {server_blind}"
        local = [r for r in rounds if not r.startswith("global-")]
        unmasked = [r.removeprefix("global-") for r in rounds if r.startswith("global-")]
        held = [f"each site's local model of rounds {', '.join(local)} (the model the server sent plus the site's "
                "update)"] if local else []
        if unmasked:
            held.append(f"the global models after rounds {', '.join(unmasked)}, which it unmasked (SecAgg+: no "
                        "site's own update)")
        return f"{' and '.join(held)} and the released model, scores summed over them"
    others = f"candidates of the other {len(data.sites) - 1} site(s)"
    if not rounds:
        return f"{attacker}'s seat: the released model only (no global model was kept); {others}"
    return (f"{attacker}'s seat: the global models after rounds {', '.join(rounds)} and the released model, scores "
            f"summed over them; {others}")


def canary_delta(scenario: ScenarioSpec) -> float:
    """The delta at which a canary (one inserted image) is bounded by the scenario's guarantee.

    Sample-level DP: its own delta. Client-level DP bounds one image only as a change of a site's data,
    two zero-out steps, at delta ``(1 + e^epsilon) delta`` (with the target epsilon, which the public's
    epsilon never exceeds). No DP: 0.
    """
    dp = scenario.dp
    if dp is None:
        return 0.0
    return dp.delta if dp.level == "sample" else (1 + math.exp(dp.epsilon)) * dp.delta


def _finding(
    attack: MembershipAttack, position: Position, settings: MembershipSpec,
    references: dict[str, ReferenceOutputs] | None, reference_seconds: float, target: dict[str, torch.Tensor],
    names: list[str], labels: torch.Tensor, pool: CandidatePool, chosen: np.ndarray, observed: str,
) -> MembershipFinding:
    """Fit and score on each signal the seat observes (summed), measure on the ``chosen`` candidates.

    ``seconds`` = the reference models' training (if used, shared by every seat) + fitting and scoring.
    """
    started = time.perf_counter()
    scores = torch.zeros(len(pool), dtype=torch.float64)
    for name in names:
        fitted = attack.fit(references[name] if attack.needs_references and references is not None else None)
        scores += fitted.score(target[name], labels).double()
    index = np.flatnonzero(chosen)
    truth = torch.from_numpy(pool.is_member[index])
    measured = membership_scores(scores[index], truth, settings.confidence)
    member_index = index[pool.is_member[index]]
    exposed = member_index[np.argsort(-scores.numpy()[member_index], kind="stable")[:MOST_EXPOSED]]
    used = references[names[0]].models if attack.needs_references and references is not None and names else 0
    return MembershipFinding(
        method=MEMBERSHIP_ATTACKS.name_of(type(attack)),
        position=position,
        status="ok",
        observed=observed,
        shadow_models=used,
        shadow_models_failed=settings.shadow_models - used if attack.needs_references else 0,
        members=measured.members,
        non_members=measured.non_members,
        auc=measured.auc,
        tpr_at_fpr={
            level: RateAtFpr(tpr=r.tpr, low=r.low, high=r.high, achieved_fpr=r.achieved_fpr, fpr_high=r.fpr_high,
                             resolved=r.resolved)
            for level, r in measured.tpr_at_fpr.items()
        },
        advantage=measured.advantage,
        confidence=settings.confidence,
        roc={"fpr": measured.roc_fpr, "tpr": measured.roc_tpr},
        most_exposed=[
            ExposedMember(site=pool.site_names[pool.site[i]], index=int(pool.index_in_site[i]), score=float(scores[i]))
            for i in exposed
        ],
        seconds=time.perf_counter() - started + (reference_seconds if attack.needs_references else 0.0),
    )


def _canary_audit(spec: AuditSpec, scenario: ScenarioSpec, data: FederatedData, build_federation: BuildFederation,
                  settings: MembershipSpec, delta: float) -> CanaryAuditFinding | None:
    """One more training run with canaries, each inserted with probability 1/2; epsilon from their losses."""
    rng = numpy_rng(spec.seed, "canaries", scenario.name)
    held_out = [data.held_out(site) for site in data.sites]
    pairs = [(k, i) for k, split in enumerate(held_out) for i in range(len(split))]
    m = min(settings.canaries, len(pairs))
    chosen = [pairs[j] for j in rng.choice(len(pairs), m, replace=False)]
    images = np.stack([held_out[k].images[i] for k, i in chosen])
    true_labels = np.array([held_out[k].labels[i] for k, i in chosen])
    task = TASKS.get(spec.data.task)
    flipped = task.mislabel(true_labels, data.n_classes, rng)
    included = rng.random(m) < 0.5
    sites = []
    for k, site in enumerate(data.sites):
        mine = np.array([included[j] and chosen[j][0] == k for j in range(m)], dtype=bool)
        train = Split(
            images=np.concatenate([site.train.images, images[mine]]),
            labels=np.concatenate([site.train.labels, flipped[mine]]),
        )
        sites.append(replace(site, train=train))
    logits = _replica_logits(
        build_federation, replace(data, sites=sites), images, flipped, task,
        derive_seed(spec.seed, "canary-run", scenario.name),
    )
    if logits is None:
        return None  # the canary run diverged: no bound from it, and the finding stays absent
    scores = -loss(logits, torch.from_numpy(task.attack_labels(flipped)))
    guesses = settings.canary_guesses or max(2, m // 5)
    audit = one_run_audit(scores.numpy(), included, guesses, delta, settings.confidence)
    return CanaryAuditFinding(**dataclasses.asdict(audit))
