"""fedsecure's protocol messages as Flower records, and back.

A protocol's payload is one of three things: a float tensor (a plaintext
update), an integer array (a plaintext sum on the fixed-point grid) or a list of
byte strings (serialized CKKS ciphertexts). Arrays travel in an ``ArrayRecord``
(numpy's own format, never pickled); byte strings and scalars in a
``ConfigRecord``. A site's evaluation travels as its
:class:`~fedsecure.fl.evaluation.ScoreHistograms` (counts of fixed shapes), and
:func:`describe` lists what a message holds, without its values.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedsecure.errors import FedsecureError
from fedsecure.fl.evaluation import ARRAY_NAMES, ScoreHistograms
from fedsecure.secure.protocol import Aggregate, Message


class WireError(FedsecureError):
    """A record that does not hold what fedsecure sent (another app, or a corrupted message)."""


def put_message(content: RecordDict, key: str, message: Message) -> None:
    """Store a site's protocol message under ``key``."""
    _put_payload(content, key, message.payload)
    content.config_records[f"{key}.meta"] = ConfigRecord({
        "weight": -1.0 if message.weight is None else float(message.weight),
        "nbytes": int(message.nbytes), "plaintext": bool(message.plaintext), "length": int(message.length),
    })


def get_message(content: RecordDict, key: str) -> Message:
    """The protocol message stored by :func:`put_message`."""
    meta = _meta(content, key)
    return Message(
        payload=_get_payload(content, key, as_tensor=True),
        weight=None if meta["weight"] < 0 else float(meta["weight"]),
        nbytes=int(meta["nbytes"]), plaintext=bool(meta["plaintext"]), length=int(meta["length"]),
    )


def put_aggregate(content: RecordDict, key: str, aggregate: Aggregate) -> None:
    """Store the server's aggregate under ``key``."""
    _put_payload(content, key, aggregate.payload)
    content.config_records[f"{key}.meta"] = ConfigRecord({
        "weight": -1 if aggregate.weight is None else int(aggregate.weight), "nbytes": int(aggregate.nbytes),
        "n_messages": int(aggregate.n_messages), "length": int(aggregate.length),
    })


def get_aggregate(content: RecordDict, key: str) -> Aggregate:
    """The aggregate stored by :func:`put_aggregate`."""
    meta = _meta(content, key)
    return Aggregate(
        payload=_get_payload(content, key, as_tensor=False),
        weight=None if meta["weight"] < 0 else int(meta["weight"]),
        nbytes=int(meta["nbytes"]), n_messages=int(meta["n_messages"]), length=int(meta["length"]),
    )


def put_tensors(content: RecordDict, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Store named tensors (a model vector, a strategy's state) under ``key``."""
    content.array_records[key] = ArrayRecord({name: Array(t.detach().cpu().numpy()) for name, t in tensors.items()})


def get_tensors(content: RecordDict, key: str) -> dict[str, torch.Tensor]:
    """The tensors stored by :func:`put_tensors` (empty when there are none)."""
    if key not in content.array_records:
        return {}
    return {name: torch.from_numpy(array.numpy().copy()) for name, array in content.array_records[key].items()}


def put_score_histograms(content: RecordDict, key: str, histograms: ScoreHistograms) -> None:
    """Store a site's evaluation counts under ``key`` (its only evaluation the server receives)."""
    content.array_records[key] = ArrayRecord({name: Array(array) for name, array in histograms.arrays().items()})


def get_score_histograms(content: RecordDict, key: str, n_classes: int) -> ScoreHistograms:
    """The counts stored by :func:`put_score_histograms`, checked to be of the fixed shapes for ``n_classes``.

    Raises:
        WireError: the record holds other arrays, arrays of other shapes, or not integers.
    """
    record = content.array_records[key]
    if set(record.keys()) != set(ARRAY_NAMES):
        raise WireError(
            f"the {key!r} record holds {sorted(record.keys())}, not the score histograms {list(ARRAY_NAMES)}"
        )
    arrays = {name: record[name].numpy() for name in ARRAY_NAMES}
    if not all(np.issubdtype(array.dtype, np.integer) for array in arrays.values()):
        raise WireError(f"the {key!r} record holds non-integer counts")
    try:
        histograms = ScoreHistograms(**arrays)
    except ValueError as exc:
        raise WireError(f"the {key!r} record: {exc}") from None
    if histograms.n_classes != n_classes:
        raise WireError(f"the {key!r} record counts {histograms.n_classes} classes, not the model's {n_classes}")
    return histograms


def describe(content: RecordDict) -> dict[str, dict[str, object]]:
    """What a message holds, without its values: each array's shape and dtype, each config value's type and length.

    Keys are ``record/name``; for the record of what left a site (its replies to the server).
    """
    arrays = {
        f"{key}/{name}": {"shape": list(array.shape), "dtype": str(array.dtype)}
        for key, record in content.array_records.items() for name, array in record.items()
    }
    configs: dict[str, object] = {}
    for key, record in content.config_records.items():
        for name, value in record.items():
            entry: dict[str, object] = {"type": type(value).__name__}
            if isinstance(value, (list, bytes, str)):
                entry["length"] = len(value)
            configs[f"{key}/{name}"] = entry
    return {"arrays": arrays, "configs": configs}


def _put_payload(content: RecordDict, key: str, payload: object) -> None:
    if isinstance(payload, torch.Tensor):
        content.array_records[key] = ArrayRecord({"payload": Array(payload.detach().cpu().numpy())})
    elif isinstance(payload, np.ndarray):
        content.array_records[key] = ArrayRecord({"payload": Array(payload)})
    elif isinstance(payload, list) and all(isinstance(chunk, bytes) for chunk in payload):
        content.config_records[key] = ConfigRecord({"chunks": payload})
    else:
        raise TypeError(f"cannot send a payload of type {type(payload).__name__}")


def _get_payload(content: RecordDict, key: str, as_tensor: bool) -> object:
    if key in content.array_records:
        array = content.array_records[key]["payload"].numpy()
        return torch.from_numpy(array.copy()) if as_tensor else array
    if key in content.config_records:
        return list(content.config_records[key]["chunks"])
    raise WireError(f"the message holds no {key!r} payload")


def _meta(content: RecordDict, key: str) -> ConfigRecord:
    try:
        return content.config_records[f"{key}.meta"]
    except KeyError:
        raise WireError(f"the message holds no {key!r} metadata") from None
