"""Secure aggregation protocols (setup, then protect -> combine -> reveal).

The names below load on first use (PEP 562): a Flower ClientApp answering a
SecAgg+ key-exchange message needs :mod:`fedsecure.secure.secagg_site`, not
TenSEAL and torch. The spec imports each protocol module, which registers its
protocol in :data:`PROTOCOLS`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "CKKSAggregation": "fedsecure.secure.ckks",
    "CKKSClient": "fedsecure.secure.ckks",
    "CKKSServer": "fedsecure.secure.ckks",
    "DEFAULT_PRESET": "fedsecure.secure.ckks_params",
    "PRESETS": "fedsecure.secure.ckks_params",
    "CKKSParameters": "fedsecure.secure.ckks_params",
    "PlainAggregation": "fedsecure.secure.plain",
    "PROTOCOLS": "fedsecure.secure.protocol",
    "Aggregate": "fedsecure.secure.protocol",
    "AggregationProtocol": "fedsecure.secure.protocol",
    "ClientRole": "fedsecure.secure.protocol",
    "Message": "fedsecure.secure.protocol",
    "Roles": "fedsecure.secure.protocol",
    "ServerRole": "fedsecure.secure.protocol",
    "SecAggClient": "fedsecure.secure.secagg",
    "SecAggPlusAggregation": "fedsecure.secure.secagg",
    "SecAggServer": "fedsecure.secure.secagg",
}

__all__ = [
    "Aggregate",
    "AggregationProtocol",
    "CKKSAggregation",
    "CKKSClient",
    "CKKSParameters",
    "CKKSServer",
    "ClientRole",
    "DEFAULT_PRESET",
    "Message",
    "PRESETS",
    "PROTOCOLS",
    "PlainAggregation",
    "Roles",
    "SecAggClient",
    "SecAggPlusAggregation",
    "SecAggServer",
    "ServerRole",
]

if TYPE_CHECKING:
    from fedsecure.secure.ckks import CKKSAggregation, CKKSClient, CKKSServer
    from fedsecure.secure.ckks_params import DEFAULT_PRESET, PRESETS, CKKSParameters
    from fedsecure.secure.plain import PlainAggregation
    from fedsecure.secure.protocol import (
        PROTOCOLS,
        Aggregate,
        AggregationProtocol,
        ClientRole,
        Message,
        Roles,
        ServerRole,
    )
    from fedsecure.secure.secagg import SecAggClient, SecAggPlusAggregation, SecAggServer


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fedsecure.secure' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
