"""The membership audit: reference federations, attacks on the released model, a one-run canary audit.

Threat model (external position): the attacker holds the released final global
model, candidate images with their labels, and the training recipe (the
spec), with which it trains its own reference federations. Candidates are
every site's training images (members) and every site's held-out images, test
and validation (non-members: same sites, same scanners, never trained on), so the attack
cannot win on a distribution shift between the two.

Reference federations run the scenario's own pipeline (strategy, local
training, DP mechanism) on a random half of the candidates, each site keeping
its own candidates; CKKS is replaced by the plain protocol for them, which
yields the bit-identical model faster. Each runs on its own seed (derived from
its membership), never the target's: with seeded noise the attacker would
otherwise replay the target's noise and batch order. Their logits are cached
under ``out_dir/cache/``.

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

import numpy as np
import torch
from torch import nn

from attacks.auditing import one_run_audit
from attacks.membership import MEMBERSHIP_ATTACKS, MembershipAttack, balanced_memberships, train_references
from attacks.membership.signals import loss
from attacks.metrics import membership_scores
from fedsecure.config.spec import AuditSpec, MembershipSpec, ScenarioSpec
from fedsecure.data.federated import FederatedData
from fedsecure.data.splits import Split
from fedsecure.errors import TrainingDivergedError
from fedsecure.fl.evaluation import logits
from fedsecure.fl.federation import Federation
from fedsecure.fl.views import ExternalView, external_view
from fedsecure.positions import Position
from fedsecure.report.findings import CanaryAuditFinding, ExposedMember, MembershipFinding, RateAtFpr
from fedsecure.secure.plain import PlainAggregation
from fedsecure.seeding import derive_seed, numpy_rng

POSITION = Position.EXTERNAL
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


def logits_of(model: nn.Module, images: np.ndarray, device: torch.device) -> torch.Tensor:
    """The model's logits on the NumPy ``images`` (see :func:`fedsecure.fl.evaluation.logits`), float64 on the CPU.

    The model moves to ``device`` (a released model may come from the Flower server's CPU).
    """
    return logits(model.to(device), torch.from_numpy(images).to(device)).double().cpu()


def _replica_logits(
    build_federation: BuildFederation, data: FederatedData, images: np.ndarray, seed: int
) -> torch.Tensor | None:
    """Train the scenario's pipeline on ``data`` (the attacker's or auditor's replica); its final logits on ``images``.

    The replica runs the plain protocol (CKKS yields the same model bit for bit)
    on its own ``seed`` (batch order, participation and seeded noise differ
    from the target's) and keeps no trace. Its warnings are silenced: they repeat the scenario's,
    which were already shown, or concern only the replica's protocol. A
    replica whose training diverges (heavy DP noise can do that) gives None.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        federation = build_federation(
            data, protocol=PlainAggregation(), evaluate_every=0, keep_messages="none", keep_global_models=False,
            seed=seed,
        )
        try:
            result = federation.run()
        except TrainingDivergedError:
            return None
    return logits_of(external_view(result).released_model, images, federation.device)


def audit_membership(
    spec: AuditSpec,
    scenario: ScenarioSpec,
    data: FederatedData,
    build_federation: BuildFederation,
    target: ExternalView,
    device: torch.device,
    cache_dir: Path,
    on_reference: Callable[[int], None] | None = None,
) -> tuple[list[MembershipFinding], CanaryAuditFinding | None]:
    """Run ``[attacks] membership`` against one scenario's released model, and its canary audit.

    Args:
        spec: the audit spec (``spec.attacks.membership`` must be set).
        scenario: the scenario whose pipeline the reference models reuse.
        data: the federated data.
        build_federation: the scenario's federation on given data, with keyword overrides.
        target: the external position's view of the scenario's federation (its released model).
        device: where models run.
        cache_dir: where reference models' logits are cached.
        on_reference: progress, called as each reference model is ready.

    Returns:
        One finding per attack (``method``, then the loss baseline), and the canary audit (None without canaries).
    """
    settings = spec.attacks.membership
    assert settings is not None
    pool = CandidatePool(data)
    labels = torch.from_numpy(pool.labels)
    target_logits = logits_of(target.released_model, pool.images, device)

    def train_and_predict(chosen: np.ndarray) -> torch.Tensor:
        seed = derive_seed(spec.seed, "reference", scenario.name, hashlib.sha256(chosen.tobytes()).hexdigest())
        return _replica_logits(build_federation, pool.federated(data, chosen), pool.images, seed)

    attacks: list[MembershipAttack] = [settings.attack()]
    if settings.method != BASELINE:
        attacks.append(MEMBERSHIP_ATTACKS.get(BASELINE)())
    references, reference_seconds = None, 0.0
    if any(a.needs_references for a in attacks):
        started = time.perf_counter()
        # What a reference model depends on: the training recipe and data, and this scenario (not the others).
        recipe = spec.model_dump_json(include={"seed", "data", "model", "federation"})
        key = hashlib.sha256(f"{recipe}|{scenario.model_dump_json()}|{data.sha256()}".encode()).hexdigest()
        members = balanced_memberships(
            len(pool), settings.shadow_models, numpy_rng(spec.seed, "references", scenario.name)
        )
        references = train_references(
            train_and_predict, members, labels, cache=cache_dir / f"membership-{scenario.name}", key=key,
            on_model=on_reference,
        )
        reference_seconds = time.perf_counter() - started
    findings = [
        _finding(attack, settings, references, reference_seconds, target_logits, labels, pool) for attack in attacks
    ]
    canary = None
    if settings.canaries:
        canary = _canary_audit(spec, scenario, data, build_federation, settings, canary_delta(scenario))
        if on_reference is not None:
            on_reference(settings.shadow_models)  # the canary run is one more federation
    return findings, canary


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


def _finding(attack, settings: MembershipSpec, references, reference_seconds: float, target_logits, labels,
             pool: CandidatePool) -> MembershipFinding:
    """Fit, score, measure. ``seconds`` = the reference models' training (if used) + fitting and scoring."""
    started = time.perf_counter()
    scores = attack.fit(references if attack.needs_references else None).score(target_logits, labels)
    truth = torch.from_numpy(pool.is_member)
    measured = membership_scores(scores, truth, settings.confidence)
    member_index = np.flatnonzero(pool.is_member)
    exposed = member_index[np.argsort(-scores.numpy()[member_index], kind="stable")[:MOST_EXPOSED]]
    return MembershipFinding(
        method=MEMBERSHIP_ATTACKS.name_of(type(attack)),
        position=POSITION,
        status="ok",
        shadow_models=references.models if attack.needs_references and references is not None else 0,
        shadow_models_failed=(
            settings.shadow_models - references.models if attack.needs_references and references else 0
        ),
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
    flipped = (true_labels + 1 + rng.integers(0, data.n_classes - 1, m)) % data.n_classes
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
        build_federation, replace(data, sites=sites), images, derive_seed(spec.seed, "canary-run", scenario.name)
    )
    if logits is None:
        return None  # the canary run diverged: no bound from it, and the finding stays absent
    scores = -loss(logits, torch.from_numpy(flipped))
    guesses = settings.canary_guesses or max(2, m // 5)
    audit = one_run_audit(scores.numpy(), included, guesses, delta, settings.confidence)
    return CanaryAuditFinding(**dataclasses.asdict(audit))
