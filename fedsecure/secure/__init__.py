"""Secure aggregation protocols (protect -> combine -> reveal)."""

from fedsecure.secure.plain import PlainAggregation
from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, Message

__all__ = ["PROTOCOLS", "Aggregate", "AggregationProtocol", "Message", "PlainAggregation"]
