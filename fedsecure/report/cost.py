"""What a scenario cost: training and protection time, bytes on the wire, round by round."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostFinding:
    """What the protection and the training cost.

    ``bytes_up_per_round`` is what all sites send the server in one round
    (mean over rounds); ``bytes_down_per_round`` what the server sends all sites.
    ``protect_seconds`` = encrypt (every site's ``protect``) + aggregate (the
    server's ``combine``) + decrypt (every site's ``reveal``), summed over rounds.
    ``bytes_per_parameter`` is one site's message size over the update's length.
    """

    train_seconds: float
    protect_seconds: float
    bytes_up_per_round: float
    bytes_down_per_round: float
    wall_seconds: float
    encrypt_seconds: float
    aggregate_seconds: float
    decrypt_seconds: float
    setup_bytes: int
    bytes_per_parameter: float


@dataclass(frozen=True)
class RoundFinding:
    """One round's global utility and costs."""

    round: int
    participants: list[str]
    epsilon: float | None
    auc: float | None
    accuracy: float | None
    train_seconds: float
    protect_seconds: float
    bytes_up: int
    bytes_down: int
    dice: float | None = None
