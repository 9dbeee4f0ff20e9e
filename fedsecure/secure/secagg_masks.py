"""SecAgg+'s mask generator, replaced by a cryptographic one: the one place fedsecure changes Flower's protocol.

Flower's SecAgg+ (flwr 1.42) expands every mask, a site's private mask and
each pairwise mask, with
``flwr.common.secure_aggregation.secaggplus_utils.pseudo_rand_gen``: it XORs
the agreed seed's 4-byte words into **one 32-bit integer** and seeds numpy's
Mersenne Twister (``RandomState``) with it. Whoever holds a masked vector can
then try all 2^32 seeds of a mask; the right one leaves a vector of
quantized values in their known range, so a server strips a site's masks and
reads its update, whatever the key exchange guaranteed.

:func:`expand_mask` takes the whole seed (256 bits for the private mask seed;
the ECDH-derived pairwise key for a pairwise mask), derives a ChaCha20 key from
it with SHA-256 under a domain tag, and reads the mask's entries from the
ChaCha20 key stream (the ``cryptography`` package, i.e. OpenSSL): 4 bytes per
entry, reduced modulo the protocol's power-of-two modulus, so every entry is
exactly uniform.

:func:`install` puts it in place of ``pseudo_rand_gen`` in the two Flower
modules that call it, the client mod (a site's masks) and the server
workflow (the masks of sites that dropped out, removed with the surviving
sites' shares): both sides of the protocol must expand a seed the same way.
Importing this module installs it (the server's :mod:`fedsecure.secure.secagg`
and the sites' :mod:`fedsecure.secure.secagg_site` both import it);
:func:`installed` tells whether it is in force, and fedsecure refuses to mask
or unmask where it is not (:func:`require_installed`).
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedsecure.errors import FedsecureError

MASK_GENERATOR = "ChaCha20 key stream (key = SHA-256 of the whole seed), 4 bytes per entry"
"""What the compliance section names as the masks' generator."""

FLOWER_MODULES = (
    "flwr.client.mod.secure_aggregation.secaggplus_mod",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
)
"""Flower's modules whose ``pseudo_rand_gen`` :func:`install` replaces."""

_DOMAIN = b"fedsecure/secagg+/mask/v1"
_NONCE = bytes(16)  # one key stream per key: a seed's mask is drawn once per round, from fresh keys each round
_ENTRY_BYTES = 4
_LARGEST_MODULUS = 2**32


class MaskGeneratorError(FedsecureError):
    """SecAgg+ would run with Flower's 32-bit mask generator, or with a modulus the generator cannot serve."""


def expand_mask(seed: bytes, num_range: int, dimensions_list: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Arrays of the given shapes, entries uniform in ``[0, num_range)``, expanded from all of ``seed``.

    The signature is Flower's ``pseudo_rand_gen``'s, so it can stand in for it.

    Args:
        seed: the agreed seed or key (any length; every bit of it changes the mask).
        num_range: the protocol's modulus, a power of two up to 2^32.
        dimensions_list: the shapes of the arrays (``()`` for a scalar).

    Raises:
        MaskGeneratorError: ``num_range`` is not a power of two in [2, 2^32].
    """
    if num_range < 2 or num_range > _LARGEST_MODULUS or num_range & (num_range - 1):
        raise MaskGeneratorError(f"the SecAgg+ modulus must be a power of two up to 2^32, got {num_range}")
    key = hashlib.sha256(_DOMAIN + seed).digest()
    sizes = [math.prod(shape) for shape in dimensions_list]
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    stream = encryptor.update(bytes(_ENTRY_BYTES * sum(sizes)))
    entries = np.frombuffer(stream, dtype="<u4").astype(np.int64) & (num_range - 1)
    masks, start = [], 0
    for shape, size in zip(dimensions_list, sizes, strict=True):
        masks.append(entries[start:start + size].reshape(shape))
        start += size
    return masks


def _flower_modules() -> list:
    # The two modules that call pseudo_rand_gen by name (they import it into their own namespace). By full
    # name: the client package re-exports a function under the module's own name.
    return [importlib.import_module(name) for name in FLOWER_MODULES]


def install() -> None:
    """Make Flower's SecAgg+ client mod and server workflow expand masks with :func:`expand_mask`."""
    for module in _flower_modules():
        module.pseudo_rand_gen = expand_mask


def installed() -> bool:
    """Whether both of Flower's SecAgg+ modules expand masks with :func:`expand_mask`."""
    return all(module.pseudo_rand_gen is expand_mask for module in _flower_modules())


def require_installed() -> None:
    """Refuse to mask or unmask anything with Flower's own generator.

    Raises:
        MaskGeneratorError: something replaced :func:`expand_mask` in Flower's modules.
    """
    if not installed():
        raise MaskGeneratorError(
            "Flower's SecAgg+ modules do not use fedsecure's ChaCha20 mask generator (something replaced it); "
            "refusing: flwr's own generator folds each seed to 32 bits, so a server could strip the masks"
        )


install()  # on import: whichever of Flower's SecAgg+ modules this process runs, it expands masks with ours
