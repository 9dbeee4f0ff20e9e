"""Audits: run a spec's scenarios, attack each from its threat positions, write the report."""

from fedsecure.audit.runner import AuditProgress, SilentProgress, run_audit, scenario_finding, write_finding
from fedsecure.config.spec import AuditSpec, LoadedSpec, load_spec, parse_spec

__all__ = [
    "AuditProgress",
    "AuditSpec",
    "LoadedSpec",
    "SilentProgress",
    "load_spec",
    "parse_spec",
    "run_audit",
    "scenario_finding",
    "write_finding",
]
