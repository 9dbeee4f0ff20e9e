"""Audits: the spec, the runner, findings, verdicts and renderers."""

from fedsecure.audit.runner import AuditProgress, SilentProgress, run_audit
from fedsecure.audit.spec import AuditSpec, LoadedSpec, load_spec, parse_spec

__all__ = ["AuditProgress", "AuditSpec", "LoadedSpec", "SilentProgress", "load_spec", "parse_spec", "run_audit"]
