"""The aggregation server's side of a round: sample the sites, sum what arrived, add central noise.

The in-process :class:`~fedsecure.fl.federation.Federation` and the Flower
ServerApp (:mod:`fedsecure.flower`) both call these, so a round means the same
on either engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedsecure.devices import Stopwatch
from fedsecure.fl.evaluation import (
    ScoreHistograms,
    Utility,
    utility_from_histograms,
)
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.task import Task
from fedsecure.secure.protocol import (
    Aggregate,
    AggregationProtocol,
    Message,
    ServerRole,
)
from fedsecure.seeding import numpy_rng, torch_generator


@dataclass(frozen=True)
class SiteUtility:
    """A model's utility on one site's local test set."""

    site: str
    n_train: int
    auc: float | None
    accuracy: float
    n_test: int
    dice: float | None = None
    dice_per_class: tuple[float | None, ...] | None = None
    hd95: float | None = None
    missed_structures: int | None = None
    spurious_structures: int | None = None

    @classmethod
    def of(cls, site: str, n_train: int, utility: Utility) -> SiteUtility:
        """``utility`` on the local test set of ``site`` (trained on ``n_train`` images)."""
        return cls(site, n_train, utility.auc, utility.accuracy, utility.n, utility.dice, utility.dice_per_class,
                   utility.hd95, utility.missed_structures, utility.spurious_structures)


@dataclass(frozen=True)
class Evaluation:
    """Utility on the whole test set and on each site's local test set."""

    global_: Utility
    per_site: list[SiteUtility]


def participation_share(clients_per_round: int | None, n_sites: int) -> float:
    """The expected share of ``n_sites`` sites in a round (SCAFFOLD scales its control variate by it)."""
    return (clients_per_round or n_sites) / n_sites


def sample_participants(
    privacy: PrivacyMechanism, *, seed: int, round_number: int, n_sites: int, clients_per_round: int | None
) -> list[int]:
    """The sites taking part in ``round_number`` (the privacy mechanism's sampling, if it has one)."""
    chosen = privacy.sample_clients(round_number, n_sites, numpy_rng(seed, "dp-sampling", round_number))
    if chosen is not None:
        return chosen
    if clients_per_round is None or clients_per_round == n_sites:
        return list(range(n_sites))
    chosen = numpy_rng(seed, "sampling", round_number).choice(n_sites, clients_per_round, replace=False)
    return sorted(int(k) for k in chosen)


def reveal_quorum(privacy: PrivacyMechanism, protocol: AggregationProtocol, n_sites: int) -> int:
    """The fewest sites' messages a round may be combined from, and the sites reveal.

    The privacy mechanism's quorum (distributed noise is calibrated for ``min_sites``
    shares), and at least 2 under secure aggregation when the federation has 2 or more
    sites: every site decrypts what the server sends back, and the server sees the result
    in the next global model, so were the "aggregate" one site's ciphertext, that site's
    update would reach the server in the clear, which secure aggregation exists to prevent.
    """
    quorum = privacy.quorum()
    if protocol.hides_updates and n_sites >= 2:
        quorum = max(quorum, 2)
    return quorum


def quorum_shortfall(
    privacy: PrivacyMechanism, protocol: AggregationProtocol, n_sites: int, n_messages: int, round_number: int
) -> str | None:
    """Why round ``round_number`` must not be combined from ``n_messages`` messages, or None if it may.

    Both engines skip such a round (the global model stays as it was) and record this line as an event.
    """
    quorum = reveal_quorum(privacy, protocol, n_sites)
    if n_messages >= quorum:
        return None
    why = ("the distributed noise is calibrated for (dp.min_sites)" if privacy.quorum() >= quorum else
           f"whose sum the sites decrypt under {protocol.name} (one site's would be its update)")
    return (
        f"round {round_number}: {n_messages} site(s) sent an update, fewer than the {quorum} {why}; "
        "the round was not combined and the global model stays as it was"
    )


def combine_round(
    server: ServerRole, privacy: PrivacyMechanism, messages: list[Message], *, length: int, seed: int,
    round_number: int, device: torch.device,
) -> tuple[Aggregate, float]:
    """The server's sum of ``messages``, with the central DP noise if the mechanism places it there.

    Returns:
        The aggregate and the seconds it took.
    """
    clock = Stopwatch(device)
    with clock.measure():
        aggregate = server.combine(messages)
        noise = privacy.central_noise(length, torch_generator(seed, "dp-central", round_number))
        if noise is not None:
            aggregate = server.perturb(aggregate, noise)
    return aggregate, clock.seconds


def pooled_evaluation(
    sites: list[tuple[str, int]], predictions: list[tuple[torch.Tensor, torch.Tensor]], task: Task
) -> Evaluation:
    """Utility pooled over the sites' local test sets, and on each.

    Args:
        sites: (name, training images) of each site evaluated.
        predictions: each site's (class probabilities, labels) on its local test set.
        task: whose metrics judge the predictions.
    """
    per_site = [
        SiteUtility.of(name, n_train, task.utility(probabilities, labels))
        for (name, n_train), (probabilities, labels) in zip(sites, predictions, strict=True)
    ]
    pooled = task.utility(torch.cat([p for p, _ in predictions]), torch.cat([y for _, y in predictions]))
    return Evaluation(global_=pooled, per_site=per_site)


def pooled_evaluation_from_histograms(sites: list[tuple[str, int]], histograms: list[ScoreHistograms]) -> Evaluation:
    """Utility pooled over the sites' local test sets, and on each, from the counts each site sent.

    The Flower server's :func:`pooled_evaluation`: it never holds a score or a label.
    Accuracy and each site's AUC are exact; the pooled AUC is within
    :func:`~fedsecure.fl.evaluation.auc_error_bound` of the exact one (see
    :func:`~fedsecure.fl.evaluation.utility_from_histograms`).

    Args:
        sites: (name, training images) of each site evaluated.
        histograms: each site's :func:`~fedsecure.fl.evaluation.score_histograms` of its local test set.
    """
    per_site = []
    for (name, n_train), counts in zip(sites, histograms, strict=True):
        per_site.append(SiteUtility.of(name, n_train, utility_from_histograms([counts])))
    return Evaluation(global_=utility_from_histograms(histograms), per_site=per_site)
