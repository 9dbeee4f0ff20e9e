"""A site reveals only an aggregate carrying the weight of the quorum of sites (fedsecure.secure.quorum).

A malicious server could send one site's ciphertext back as the "aggregate":
every site would decrypt that site's update for it (it reaches the server
through the next global model), or a sum of fewer sites than the distributed
noise is calibrated for. The weight total travels encrypted inside the
aggregate; the sites compare it with the least total of the quorum.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.server import reveal_quorum
from fedsecure.secure import CKKSAggregation, PlainAggregation
from fedsecure.secure.quorum import BelowQuorumError, QuorumCheckedClient, quorum_weight


class _MinSites(PrivacyMechanism):
    """Distributed noise calibrated for ``min_sites`` shares, as ClientLevelDP's quorum() states it."""

    def __init__(self, min_sites: int) -> None:
        self.min_sites = min_sites

    def quorum(self) -> int:
        return self.min_sites


def _updates(n: int) -> list[torch.Tensor]:
    return [torch.tensor([0.5, -1.0, 2.0, 0.25]) * (k + 1) for k in range(n)]


def test_a_site_refuses_a_ckks_aggregate_below_the_quorum_and_reveals_a_full_one():
    # Client-level DP: every site weighs one unit, the noise is calibrated for all 3 sites' shares.
    protocol, privacy = CKKSAggregation(), _MinSites(3)
    roles = protocol.setup(3, weight_unit=1.0)
    messages = [roles.client.protect(update, 1.0) for update in _updates(3)]
    quorum = reveal_quorum(privacy, protocol, 3)
    site = QuorumCheckedClient(roles.client, quorum=quorum, minimum_weight=quorum_weight([1.0] * 3, 1.0, quorum))

    full = roles.server.combine(messages)
    assert torch.equal(site.reveal(full), roles.client.reveal(full)), "a full aggregate reveals as before"

    with pytest.raises(BelowQuorumError, match="less than the 3 of the 3 site"):
        site.reveal(roles.server.combine(messages[:2]))  # two sites' sum: less noise than accounted
    # One site's ciphertext passed off as the aggregate, its metadata claiming all three.
    lone = replace(full, payload=messages[0].payload, nbytes=messages[0].nbytes)
    with pytest.raises(BelowQuorumError, match="refusing to use it"):
        site.reveal(lone)
    assert torch.allclose(roles.client.reveal(lone), _updates(1)[0]), (
        "unchecked, the sites would reveal site 0's update"
    )


def test_under_ckks_without_dp_a_site_reveals_two_sites_sum_but_not_one_sites_update():
    protocol, privacy = CKKSAggregation(), PrivacyMechanism()
    sizes = [100, 250, 400]  # weighted FedAvg: the weights are the sizes, in units of the smallest
    roles = protocol.setup(3, weight_unit=100.0)
    messages = [roles.client.protect(update, float(n)) for update, n in zip(_updates(3), sizes, strict=True)]
    quorum = reveal_quorum(privacy, protocol, 3)
    assert quorum == 2, "secure aggregation needs at least two sites in a sum, whatever the privacy mechanism"
    site = QuorumCheckedClient(roles.client, quorum=quorum, minimum_weight=quorum_weight(sizes, 100.0, quorum))

    site.reveal(roles.server.combine(messages[:2]))  # the two smallest sites: 3.5 units, the least a pair carries
    with pytest.raises(BelowQuorumError):
        site.reveal(roles.server.combine(messages[:1]))


def test_the_plaintext_protocol_is_checked_the_same_way():
    protocol = PlainAggregation()
    roles = protocol.setup(3, weight_unit=1.0)
    messages = [roles.client.protect(update, 1.0) for update in _updates(3)]
    site = QuorumCheckedClient(roles.client, quorum=3, minimum_weight=quorum_weight([1.0] * 3, 1.0, 3))
    assert torch.equal(site.reveal(roles.server.combine(messages)), roles.client.reveal(roles.server.combine(messages)))
    with pytest.raises(BelowQuorumError):
        site.reveal(roles.server.combine(messages[1:]))


@pytest.mark.parametrize(
    ("protocol", "privacy_quorum", "n_sites", "expected"),
    [
        (CKKSAggregation(), 1, 3, 2),  # one site's ciphertext would reveal its update
        (CKKSAggregation(), 1, 1, 1),  # a one-site federation has nothing to hide it among
        (CKKSAggregation(), 3, 3, 3),  # distributed noise for 3 shares
        (PlainAggregation(), 1, 3, 1),  # the server reads every update anyway
        (PlainAggregation(), 2, 3, 2),
    ],
)
def test_the_reveal_quorum(protocol, privacy_quorum, n_sites, expected):
    assert reveal_quorum(_MinSites(privacy_quorum), protocol, n_sites) == expected


def test_the_quorum_weight_is_the_smallest_sites_total_on_the_grid():
    assert quorum_weight([1.0, 1.0, 1.0], 1.0, 2) == 2 * 2**32
    assert quorum_weight([400.0, 100.0, 250.0], 100.0, 2) == int(3.5 * 2**32)
    with pytest.raises(ValueError, match="quorum of 4 among 3"):
        quorum_weight([1.0] * 3, 1.0, 4)
