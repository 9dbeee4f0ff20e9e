"""What each threat position observes of a federation, as logits on the membership candidates.

The membership audit scores candidates from the models one seat holds:

* ``external``: the released model;
* ``server``: each site's local model of every kept round (the first and the
  last) it received in plaintext (the model it sent plus the site's update),
  each candidate scored by its own site's model, the hospital the patient was
  seen at being known; under SecAgg+, which hides every update but lets it
  unmask each round's sum, the global models after the rounds instead (the
  trajectory a site holds, below); and the released model, which it receives
  whatever the protocol (under CKKS, all it holds);
* ``client``: the global models every site receives, at most
  :data:`TRAJECTORY` of them evenly spaced over the rounds, the released model
  last (a loss trajectory; the initial model is left out: it has seen no data).

The same function reads the target federation and every reference federation,
so the attacker's references and the target are observed alike. Signals are
named logits: ``external``, ``server@<round>`` (the sites' local models of
that round), ``server@global-<round>`` and ``client@<round>`` (the global state
after that round); the released model's are ``server@released`` and
``client@released``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsecure.fl.task import Task
from fedsecure.fl.views import SeatViews
from fedsecure.positions import Position

TRAJECTORY = 4
RELEASED = "released"


def server_signal(round_name: str) -> str:
    """The name of one server-seat signal.

    ``round_name`` is ``"<r>"`` (the sites' local models of round r), ``"global-<r>"`` (the global model
    after round r) or ``"released"``.
    """
    return f"{Position.SERVER.value}@{round_name}"


def client_signal(round_name: str) -> str:
    """The name of one client-seat signal (the global state after round ``round_name``, or "released")."""
    return f"{Position.CLIENT.value}@{round_name}"


def trajectory_rounds(states: int) -> list[int]:
    """Which kept global states (indices; state i starts round i + 1) the client seat scores with.

    State 0 is the initial model (no data seen); of the others at most ``TRAJECTORY - 1``, evenly
    spaced and ending with the last; the released model is scored besides.
    """
    later = list(range(1, states))
    if len(later) <= TRAJECTORY - 1:
        return later
    picks = np.linspace(0, len(later) - 1, TRAJECTORY - 1).round().astype(int)
    return sorted({later[i] for i in picks})


def seat_signals(
    views: SeatViews, positions: list[Position], images: np.ndarray, sites: np.ndarray, site_names: list[str],
    device: torch.device, labels: np.ndarray, task: Task, *, server_reads_updates: bool = True,
) -> dict[str, torch.Tensor]:
    """Per-sample logits (N, C) on the candidates for every signal the ``positions`` observe.

    Args:
        views: the federation's views.
        positions: the seats to observe from.
        images: (N, C, H, W) candidates.
        sites: (N,) each candidate's site index (into ``site_names``).
        site_names: the federation's site names.
        device: where the models run.
        labels: the candidates' labels (classes or masks).
        task: what the labels are; it reads a dense output as per-sample logits (:meth:`Task.sample_logits`).
        server_reads_updates: whether the server of the federation being imitated reads the sites' updates.
            A reference federation runs the plain protocol (the same models, faster); observing a target
            whose server reads none (CKKS, SecAgg+), it must score what that server holds, not the updates.

    The server's local-model signals are absent when it holds no site's plaintext update (secure
    aggregation); under SecAgg+ it scores with the global models it unmasked instead. A candidate of
    a site that sent nothing in a kept round is scored there by the released model.
    """
    batch, truth = torch.from_numpy(images).to(device), torch.from_numpy(labels)

    def on(model: torch.nn.Module, chosen: np.ndarray | slice = slice(None)) -> torch.Tensor:
        return task.sample_logits(model.to(device), batch[chosen], truth[chosen])

    released = on(views.external.released_model)

    @functools.cache
    def after_round(index: int) -> torch.Tensor:
        # The global state after round ``index``: every site holds it, and so does a SecAgg+ server (scored once).
        return on(views.client.model_at(index))

    trajectory = trajectory_rounds(len(views.client.global_states))
    signals: dict[str, torch.Tensor] = {}
    if Position.EXTERNAL in positions:
        signals[Position.EXTERNAL.value] = released
    if Position.SERVER in positions:
        rebuilt = views.server.local_models() if server_reads_updates else {}
        for round_number, local in rebuilt.items():
            scored = released.clone()
            for k, name in enumerate(site_names):
                mine = np.flatnonzero(sites == k)
                if name in local and len(mine):
                    scored[mine] = on(local[name], mine)
            signals[server_signal(str(round_number))] = scored
        if not rebuilt and views.server.reads_sum:
            # SecAgg+: no site's update, but every round's sum, which it unmasked itself: it holds the global
            # models every site receives, scored like the client seat's trajectory (on every candidate).
            for index in trajectory:
                signals[server_signal(f"global-{index}")] = after_round(index)
        signals[server_signal(RELEASED)] = released  # the server receives the final model, whatever the protocol
    if Position.CLIENT in positions:
        for index in trajectory:
            signals[client_signal(str(index))] = after_round(index)
        signals[client_signal(RELEASED)] = released
    return signals
