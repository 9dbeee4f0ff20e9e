"""The one exception hierarchy of fedsecure.

Every error a user can cause (a bad spec, a bad data file, an unknown name)
derives from :class:`FedsecureError`; the CLI turns these into one line on
stderr and exit code 2. Anything else that escapes is a bug in fedsecure.
"""

from __future__ import annotations


class FedsecureError(Exception):
    """Base class of every error caused by the user's input or settings."""


class DataError(FedsecureError):
    """A data file or data setting that cannot be used (names the file and the problem)."""


class SpecError(FedsecureError):
    """An audit spec that does not validate (names the field and the problem)."""


class UnknownNameError(FedsecureError, KeyError):
    """A name that is not in a registry (strategy, protocol, model, ...)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class NotSupportedError(FedsecureError):
    """A setting fedsecure recognises but cannot run in this version or configuration."""


class OutputError(FedsecureError):
    """An output location that would lose or overwrite results that must be kept."""


class CKKSParametersError(FedsecureError):
    """Encryption parameters that are invalid or below 128-bit security (refused, never weakened)."""


class AggregationOverflowError(FedsecureError):
    """A value too large for the encrypted fixed-point range: it would silently corrupt the aggregate."""


class TrainingDivergedError(FedsecureError):
    """Local training produced a non-finite update (usually: the learning rate is too large)."""


class ReportFormatError(FedsecureError):
    """A report.json (or a stage of one) that is not in the report's form (names the field and the problem)."""
