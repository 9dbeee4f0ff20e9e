"""Imports run one way: config -> engine -> audit -> report, and attacks stand alone.

Walks every module's imports (including those inside functions) with ``ast``,
so a lazy import cannot hide a back edge.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ENGINE = ("data", "fl", "secure", "privacy", "models", "devices", "seeding", "positions", "registry", "errors")


def imports_of(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from a.b import c`` counts as ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(*parts: str) -> list[Path]:
    base = ROOT.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def offending(paths: list[Path], forbidden) -> list[str]:
    return [f"{path.relative_to(ROOT)} imports {name}" for path in paths for name in sorted(imports_of(path))
            if forbidden(name)]


def under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def test_the_engine_imports_nothing_above_it():
    engine = [path for part in ENGINE for path in modules("fedsecure", part)]
    above = ("fedsecure.config", "fedsecure.audit", "fedsecure.report", "fedsecure.flower", "fedsecure.cli")
    assert offending(engine, lambda name: under(name, *above)) == []


def test_fl_owns_the_privacy_hooks_and_never_imports_privacy():
    assert offending(modules("fedsecure", "fl"), lambda name: under(name, "fedsecure.privacy")) == []


def test_config_imports_neither_audit_nor_report():
    above = ("fedsecure.audit", "fedsecure.report", "fedsecure.flower", "fedsecure.cli")
    assert offending(modules("fedsecure", "config"), lambda name: under(name, *above)) == []


def test_the_report_reads_findings_only():
    # The report renders report.json: it needs no engine, no audit, no Flower.
    forbidden = ("fedsecure.audit", "fedsecure.flower", "fedsecure.cli", "fedsecure.fl", "fedsecure.privacy",
                 "fedsecure.secure", "fedsecure.data", "fedsecure.models")
    assert offending(modules("fedsecure", "report"), lambda name: under(name, *forbidden)) == []


def test_flower_reaches_the_audit_and_the_report_only_through_their_packages():
    def internal(name: str) -> bool:
        packages = ("fedsecure.audit", "fedsecure.report")
        return under(name, *packages) and name not in packages

    assert offending(modules("fedsecure", "flower"), internal) == []


def test_the_audit_does_not_reach_into_the_cli():
    assert offending(modules("fedsecure", "audit"), lambda name: under(name, "fedsecure.cli")) == []


def test_the_attacks_use_fedsecure_only_for_its_registry():
    allowed = ("fedsecure.registry", "fedsecure.errors")
    assert offending(modules("attacks"), lambda name: under(name, "fedsecure") and name not in allowed) == []


@pytest.mark.parametrize("forbidden", [
    ["fedsecure.fl", "fedsecure.privacy", "opacus", "tenseal"],
])
def test_importing_the_attacks_loads_no_engine(forbidden):
    code = (
        "import sys, attacks.inversion, attacks.membership, attacks.auditing, attacks.metrics\n"
        "import attacks.mechanism_audit, attacks.one_shot\n"
        f"loaded = sorted({set(forbidden)!r} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_a_flower_clientapp_without_sample_level_dp_loads_no_opacus():
    # Flower starts a process per message: the site's engine must not pay for Opacus (about 1.5 s) unless
    # the scenario trains with DP-SGD; naming an accountant in a spec must not load it either.
    code = (
        "import sys, fedsecure.flower.site_side, fedsecure.privacy\n"
        "from fedsecure.config.spec import parse_spec\n"
        "parse_spec('name = \"x\"\\n[[scenario]]\\nname = \"dp\"\\n"
        "dp = { level = \"client\", epsilon = 8.0, delta = 1e-5, accountant = \"prv\", "
        "placement = \"distributed\" }\\n', '<test>')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'opacus')\n"
        "assert not loaded, loaded[:5]\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_the_walker_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from fedsecure.audit.runner import run_audit\n    import fedsecure.privacy.noise\n"
    )
    assert imports_of(module) == {"fedsecure.audit.runner", "fedsecure.privacy.noise"}
