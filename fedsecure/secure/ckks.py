"""CKKS homomorphic encryption of updates (TenSEAL): the server adds ciphertexts it cannot read.

Key setup: the sites share one CKKS secret context (one site generates it and
hands it to the others over their own channel); the server receives the
context serialized **without** the secret key, from which it can add
ciphertexts but neither decrypt nor encrypt.

Each site packs ``(weight / weight_unit) * update`` followed by its normalized
weight into one contiguous vector, rounds it to the fixed-point grid
(:mod:`fedsecure.secure.fixed_point`), encrypts it chunk by chunk (``slots``
values per ciphertext) and sends the serialized ciphertexts. The server
deserializes and adds them; the sites decrypt the sum, round it back to the
grid (CKKS noise is far below half a grid step), and divide the first part by
the last value: the weighted mean of whichever sites' messages arrived, bit for
bit what the plaintext protocol computes, with no ciphertext-by-plaintext
multiplication on the server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts
import torch
from typing_extensions import override

from fedsecure.errors import AggregationOverflowError, CKKSParametersError
from fedsecure.secure.ckks_params import DEFAULT_PRESET, PRESETS, CKKSParameters
from fedsecure.secure.fixed_point import from_grid, to_grid
from fedsecure.secure.packing import pack, unpack
from fedsecure.secure.protocol import PROTOCOLS, Aggregate, AggregationProtocol, ClientRole, Message, ServerRole


@PROTOCOLS.register("ckks")
@dataclass(frozen=True)
class CKKSAggregation(AggregationProtocol):
    """Secure aggregation with CKKS homomorphic encryption.

    Args:
        preset: name of a parameter preset in :data:`~fedsecure.secure.ckks_params.PRESETS`.
        parameters: explicit parameters instead of a preset (checked for 128-bit security).
    """

    preset: str = DEFAULT_PRESET
    parameters: CKKSParameters | None = field(default=None)

    name = "ckks"
    hides_updates = True
    needs_site_secret = True
    message_form = "ciphertext"
    server_reads_sum = False

    def __post_init__(self) -> None:
        if self.parameters is None and self.preset not in PRESETS:
            raise CKKSParametersError(f"unknown CKKS preset {self.preset!r}; choose one of: {', '.join(PRESETS)}")

    @override
    def describe(self) -> dict[str, Any]:
        params = self.resolved
        return {
            "name": self.name,
            "preset": self.preset if self.parameters is None else None,
            "poly_modulus_degree": params.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes),
            "scale_bits": params.scale_bits,
            "security_bits": 128,
            "max_magnitude": params.max_magnitude,
        }

    @property
    def resolved(self) -> CKKSParameters:
        """The parameters in force."""
        return self.parameters if self.parameters is not None else PRESETS[self.preset]

    def site_secret(self) -> bytes:
        """A new CKKS context with its secret key, serialized (the sites' shared secret)."""
        params = self.resolved
        try:
            context = ts.context(
                ts.SCHEME_TYPE.CKKS,
                poly_modulus_degree=params.poly_modulus_degree,
                coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                # Sites share the secret key anyway; symmetric encryption gives the
                # same ciphertexts' size and leaves the server no way to encrypt.
                encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            )
        except (ValueError, RuntimeError) as exc:
            raise CKKSParametersError(f"TenSEAL rejected the CKKS parameters {params}: {exc}") from None
        context.global_scale = 2.0**params.scale_bits
        return context.serialize(save_secret_key=True)

    def server_material(self, secret: bytes) -> bytes:
        """The context without its secret key: enough to add ciphertexts, not to decrypt."""
        return ts.context_from(secret).serialize(save_secret_key=False)

    @override
    def client_role(self, secret: bytes, *, n_clients: int, weight_unit: float) -> CKKSClient:
        try:
            context = ts.context_from(secret)
        except (ValueError, RuntimeError) as exc:
            raise CKKSParametersError(f"not a TenSEAL context: {exc}") from None
        if not context.is_private():
            raise CKKSParametersError("a site was handed a CKKS context without the secret key")
        self._check_matches(context)
        return CKKSClient(context, self.resolved, n_clients=n_clients, weight_unit=weight_unit)

    @override
    def server_role(self, material: bytes) -> CKKSServer:
        return CKKSServer(material)

    def _check_matches(self, context: ts.Context) -> None:
        # A context made for other parameters would encrypt outside this preset's
        # range checks (a site configured with another study's key file).
        expected = 2.0 ** self.resolved.scale_bits
        if context.global_scale != expected:
            raise CKKSParametersError(
                f"the CKKS context's scale 2^{math.log2(context.global_scale):g} does not match the "
                f"scenario's parameters (2^{self.resolved.scale_bits}); was it made for another spec?"
            )


class CKKSClient(ClientRole):
    """A site holding the shared secret context."""

    def __init__(self, context: ts.Context, parameters: CKKSParameters, n_clients: int, weight_unit: float) -> None:
        if weight_unit <= 0:
            raise ValueError(f"weight_unit must be > 0, got {weight_unit}")
        self._context = context
        self.parameters = parameters
        self.weight_unit = weight_unit
        # The sum of n messages must stay in range, so each may use 1/n of it.
        self.value_limit = parameters.max_magnitude / max(n_clients, 1)

    @override
    def protect(self, update: torch.Tensor, weight: float) -> Message:
        scaled_weight = weight / self.weight_unit
        values = np.append(update.detach().cpu().float().double().numpy().reshape(-1) * scaled_weight, scaled_weight)
        largest = float(np.abs(values).max())
        if not np.isfinite(largest) or largest > self.value_limit:
            raise AggregationOverflowError(
                f"an encrypted value of magnitude {largest:.3g} exceeds the CKKS range {self.value_limit:.3g} "
                f"of these parameters (data prime {self.parameters.coeff_mod_bit_sizes[0]} bits, scale "
                f"2^{self.parameters.scale_bits}); refusing to send a message that would corrupt the aggregate"
            )
        on_grid = from_grid(to_grid(values))
        chunks = [ts.ckks_vector(self._context, chunk).serialize() for chunk in pack(on_grid, self.parameters.slots)]
        return Message(
            payload=chunks, weight=None, nbytes=sum(len(c) for c in chunks), plaintext=False, length=update.numel()
        )

    @override
    def reveal_sum(self, aggregate: Aggregate) -> tuple[np.ndarray, int]:
        chunks = [np.asarray(ts.ckks_vector_from(self._context, c).decrypt()) for c in aggregate.payload]
        values = to_grid(unpack(chunks, aggregate.length + 1))  # the update, then the weight
        # The weight total travels encrypted, as the last value: only the sites read it.
        return values[:-1], int(values[-1])


class CKKSServer(ServerRole):
    """The aggregator: holds a context without the secret key, so it can add but not decrypt."""

    def __init__(self, public_context: bytes) -> None:
        self.context = ts.context_from(public_context)
        if self.context.is_private():
            raise CKKSParametersError("the server was handed a context holding the secret key")

    @override
    def combine(self, messages: list[Message]) -> Aggregate:
        if not messages:
            raise ValueError("no messages to combine")
        lengths = {(len(m.payload), m.length) for m in messages}
        if len(lengths) != 1:
            raise ValueError(f"messages of different shapes cannot be added: {sorted(lengths)}")
        sums = [ts.ckks_vector_from(self.context, c) for c in messages[0].payload]
        for message in messages[1:]:
            for total, chunk in zip(sums, message.payload, strict=True):
                total += ts.ckks_vector_from(self.context, chunk)
        payload = [total.serialize() for total in sums]
        return Aggregate(
            payload=payload, weight=None, nbytes=sum(len(c) for c in payload),
            n_messages=len(messages), length=messages[0].length,
        )
