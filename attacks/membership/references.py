"""Reference (shadow) models: who is in which, training them through the target's own pipeline, caching.

The attacker trains K reference models the way the target was trained, each
on a random half of the candidate pool, such that every candidate is *in*
exactly half of them (Carlini et al. 2022's balanced design: each sample has
IN and OUT models). Training is the caller's function, so a federated target
gets federated reference models (the same federation on resampled member
sets) and a centralized one centralized models.

Training is the expensive part, so every finished model's logits are cached
(one ``.npz`` per model, written atomically, read without pickle) under a key
that names everything it depends on; an interrupted audit resumes from them.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from attacks.membership.base import ReferenceOutputs

TrainAndPredict = Callable[[np.ndarray], torch.Tensor | None]
"""Trains one model on the candidates where the mask is True; returns its (N, C) logits on all candidates,
or None when that training failed (the model is then left out)."""


def balanced_memberships(candidates: int, models: int, rng: np.random.Generator) -> np.ndarray:
    """(models, candidates) membership masks with every candidate in exactly ``models // 2`` models.

    Raises:
        ValueError: fewer than 2 models.
    """
    if models < 2:
        raise ValueError(f"reference models must be >= 2 (each sample needs an IN and an OUT model), got {models}")
    order = np.argsort(rng.random((models, candidates)), axis=0)  # a random permutation of models per candidate
    return order < models // 2


def train_references(
    train_and_predict: TrainAndPredict,
    members: np.ndarray,
    labels: torch.Tensor,
    cache: Path | None = None,
    key: str = "",
    on_model: Callable[[int], None] | None = None,
) -> ReferenceOutputs:
    """Train (or load from ``cache``) one reference model per row of ``members``.

    A model whose training fails (``train_and_predict`` returns None, e.g. it
    diverged) is left out: the outputs hold only the models that trained, and
    the caller can compare ``models`` with the number asked for.

    Args:
        train_and_predict: trains one model on a membership mask, returns its logits on all candidates (or None).
        members: (K, N) membership masks (see :func:`balanced_memberships`).
        labels: (N,) the candidates' labels.
        cache: a directory for the models' logits; None keeps nothing.
        key: what the cached logits depend on (target pipeline, data, seed);
            a cached file with another key is retrained, never reused.
        on_model: called with each model's index when it is ready (progress).
    """
    logits, kept = [], []
    for k, mask in enumerate(members):
        path = cache / f"reference-{k:03d}.npz" if cache is not None else None
        cached = _load(path, key, mask) if path is not None else None
        if cached is None:
            trained = train_and_predict(mask)
            if trained is not None:
                cached = trained.detach().cpu().double()
                if path is not None:
                    _save(path, key, mask, cached)
        if cached is not None:
            logits.append(cached)
            kept.append(k)
        if on_model is not None:
            on_model(k)
    if not logits:
        raise ValueError("every reference model failed to train")
    return ReferenceOutputs(
        logits=torch.stack(logits), members=torch.as_tensor(members[kept]), labels=labels.cpu()
    )


def _load(path: Path, key: str, mask: np.ndarray) -> torch.Tensor | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key or not np.array_equal(stored["members"], mask):
                return None
            return torch.from_numpy(stored["logits"])
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is retrained


def _save(path: Path, key: str, mask: np.ndarray, logits: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(handle)
    try:
        np.savez(temporary, key=np.array(key), members=mask, logits=logits.numpy())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
