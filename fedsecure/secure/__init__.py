"""Secure aggregation protocols (setup, then protect -> combine -> reveal)."""

from fedsecure.secure.ckks import CKKSAggregation, CKKSClient, CKKSServer
from fedsecure.secure.ckks_params import DEFAULT_PRESET, PRESETS, CKKSParameters
from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, ClientRole, Message, Roles, ServerRole
from fedsecure.secure.secagg import SecAggClient, SecAggPlusAggregation, SecAggServer

__all__ = [
    "DEFAULT_PRESET",
    "PRESETS",
    "PROTOCOLS",
    "Aggregate",
    "AggregationProtocol",
    "CKKSAggregation",
    "CKKSClient",
    "CKKSParameters",
    "CKKSServer",
    "ClientRole",
    "Message",
    "PlainAggregation",
    "Roles",
    "SecAggClient",
    "SecAggPlusAggregation",
    "SecAggServer",
    "ServerRole",
]
