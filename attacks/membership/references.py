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

TrainAndObserve = Callable[[np.ndarray], dict[str, torch.Tensor] | None]
"""Trains one model (or federation) on the candidates where the mask is True; returns named (N, C) logits
on all candidates, one per thing an attacker observes of it (the released model, a site's local model, one
round's global model), or None when that training failed."""

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

    def observe(mask: np.ndarray) -> dict[str, torch.Tensor] | None:
        logits = train_and_predict(mask)
        return None if logits is None else {"model": logits}

    return train_reference_signals(observe, members, labels, cache, key, on_model)["model"]


def train_reference_signals(
    train_and_observe: TrainAndObserve,
    members: np.ndarray,
    labels: torch.Tensor,
    cache: Path | None = None,
    key: str = "",
    on_model: Callable[[int], None] | None = None,
) -> dict[str, ReferenceOutputs]:
    """:func:`train_references` for trainings an attacker observes in several ways: reference outputs per signal.

    Each training returns named logits (say, of the released model and of each round's global
    model); the result holds, for every name all kept trainings returned, the reference outputs of
    that name. One set of trainings thus serves every threat position.
    """
    signals: list[dict[str, torch.Tensor]] = []
    kept = []
    for k, mask in enumerate(members):
        path = cache / f"reference-{k:03d}.npz" if cache is not None else None
        cached = _load(path, key, mask) if path is not None else None
        if cached is None:
            trained = train_and_observe(mask)
            if trained is not None:
                cached = {name: logits.detach().cpu().double() for name, logits in trained.items()}
                if path is not None:
                    _save(path, key, mask, cached)
        if cached is not None:
            signals.append(cached)
            kept.append(k)
        if on_model is not None:
            on_model(k)
    if not signals:
        raise ValueError("every reference model failed to train")
    common = set.intersection(*(set(s) for s in signals))
    return {
        name: ReferenceOutputs(
            logits=torch.stack([s[name] for s in signals]), members=torch.as_tensor(members[kept]), labels=labels.cpu()
        )
        for name in sorted(common)
    }


_SIGNAL = "signal:"


def _load(path: Path, key: str, mask: np.ndarray) -> dict[str, torch.Tensor] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) != key or not np.array_equal(stored["members"], mask):
                return None
            signals = {name[len(_SIGNAL):]: torch.from_numpy(stored[name]) for name in stored.files
                       if name.startswith(_SIGNAL)}
            return signals or None
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache entry is retrained


def _save(path: Path, key: str, mask: np.ndarray, signals: dict[str, torch.Tensor]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".npz")
    os.close(handle)
    try:
        arrays: dict[str, np.ndarray] = {"key": np.array(key), "members": mask}
        arrays.update({f"{_SIGNAL}{name}": logits.numpy() for name, logits in signals.items()})
        np.savez(temporary, allow_pickle=False, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
