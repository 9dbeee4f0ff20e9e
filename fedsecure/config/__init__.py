"""Configuration: the audit spec (TOML, validated as a whole by pydantic), its quick version, the embedded default."""

from fedsecure.config.quick import quick_spec
from fedsecure.config.spec import AuditSpec, LoadedSpec, load_spec, parse_spec

__all__ = ["AuditSpec", "LoadedSpec", "load_spec", "parse_spec", "quick_spec"]
