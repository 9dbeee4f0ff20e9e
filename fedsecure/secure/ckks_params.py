"""CKKS parameters: named presets, checked against the 128-bit security table.

Pure data and arithmetic, no TenSEAL: what a preset costs and which values it
can carry exactly enough.

* **Security.** For a ring dimension N, the total bit length of the
  coefficient modulus may not exceed the HomomorphicEncryption.org standard's
  bound for 128-bit classical security (the table Microsoft SEAL enforces as
  ``CoeffModulus::MaxBitCount(N, sec_level_type::tc128)``).
* **Range.** Aggregation only adds ciphertexts, so one data prime ``q0`` plus
  SEAL's special prime suffice. A value is encoded as ``round(x * 2**scale_bits)``
  and must stay below ``q0 / 2``: the largest magnitude an aggregate may reach
  is ``2**(q0_bits - scale_bits - 1)``, and clients check it before encrypting.
* **Precision.** Encryption adds noise of a few units, i.e. an absolute error
  near ``2**-scale_bits`` times a small factor; relative to an aggregate of
  magnitude m the error is that over m.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedsecure.errors import CKKSParametersError

# HomomorphicEncryption.org security standard (2018), 128-bit classical security,
# ternary secret: largest total coefficient-modulus bit count per ring dimension.
MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
MAX_PRIME_BITS = 60  # SEAL's limit for one prime


@dataclass(frozen=True)
class CKKSParameters:
    """One CKKS parameter set.

    Args:
        poly_modulus_degree: ring dimension N; a ciphertext packs N / 2 values.
        coeff_mod_bit_sizes: bit sizes of the coefficient-modulus primes, data
            prime first, SEAL's special prime last.
        scale_bits: fixed-point scale ``2**scale_bits``.

    Raises:
        CKKSParametersError: the modulus exceeds the 128-bit bound for N, N
            is not a supported ring dimension, or the primes/scale are malformed.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        n, bits = self.poly_modulus_degree, self.coeff_mod_bit_sizes
        if n not in MAX_MODULUS_BITS_128:
            raise CKKSParametersError(
                f"ring dimension {n} is not one of {sorted(MAX_MODULUS_BITS_128)}"
            )
        if len(bits) < 2:
            raise CKKSParametersError("CKKS needs at least two primes (a data prime and the special prime)")
        if any(not 1 <= b <= MAX_PRIME_BITS for b in bits):
            raise CKKSParametersError(f"every prime must have 1-{MAX_PRIME_BITS} bits, got {list(bits)}")
        total = sum(bits)
        if total > MAX_MODULUS_BITS_128[n]:
            raise CKKSParametersError(
                f"coefficient modulus of {total} bits with ring dimension {n} is below 128-bit security "
                f"(at most {MAX_MODULUS_BITS_128[n]} bits); refusing"
            )
        if not 0 < self.scale_bits < bits[0] - 1:
            raise CKKSParametersError(
                f"scale 2^{self.scale_bits} leaves no room below the {bits[0]}-bit data prime"
            )

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def max_magnitude(self) -> float:
        """Largest absolute value an aggregate may reach before it wraps around the data prime."""
        return 2.0 ** (self.coeff_mod_bit_sizes[0] - self.scale_bits - 1)


PRESETS: dict[str, CKKSParameters] = {
    # NVFlare's default, for comparison: ~57 bytes per parameter.
    "n8192-nvflare": CKKSParameters(8192, (60, 40, 40), 40),
    "n4096-q60": CKKSParameters(4096, (60, 49), 46),
    "n4096-q59": CKKSParameters(4096, (59, 50), 45),
    # Half the range and a sixteenth of the precision of n4096-q59: for updates
    # known to be large (relative error ~1e-4 at the bottom of the range below).
    "n4096-q50": CKKSParameters(4096, (50, 40), 38),
}
# Chosen by measurement (benchmarks/ckks_aggregation.py, "presets"): the smallest
# ciphertext per parameter whose weighted mean stays within 1e-6 relative error
# over the operating range below. Bytes per value are about q0_bits / 2, so the
# data prime's size is the whole cost; range and precision share its bits.
DEFAULT_PRESET = "n4096-q59"

# The operating range the presets are measured on (and the property tests draw
# from): updates whose largest entry is 1e-3 .. 10, site weights up to 100x the
# smallest site's (weights are divided by the smallest), any subset of up to 5
# sites arriving. The sum then stays below 5 * 100 * 10 = 5000 < 2^13, and the
# CKKS noise (about 2^(9 - scale_bits)) stays far below half the 2^-32 grid step.
OPERATING_RANGE = {"max_entry": (1e-3, 10.0), "weight_ratio": (1.0, 100.0), "max_sites": 5}
