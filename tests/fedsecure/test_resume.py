"""The runner's stages: an interrupted audit resumes to the same report; --quick and --only."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsecure.audit import load_spec, run_audit
from fedsecure.audit.run_directory import RunDirectory, RunIdentity
from fedsecure.config.quick import QUICK_REFERENCE_MODELS, QUICK_ROUNDS, quick_spec
from fedsecure.config.spec import parse_spec
from fedsecure.errors import OutputError, SpecError
from tests.fedsecure.tiny_specs import PLAIN_AND_CKKS, TINY_FEDAVG, tiny_spec

FEDSECURE = Path(sys.executable).with_name("fedsecure")

SPEC = tiny_spec("resume-tiny", 2, TINY_FEDAVG, PLAIN_AND_CKKS, """
[[scenario]]
name = "client-dp"
dp = { level = "client", epsilon = 8.0, delta = 1e-3, clip = 0.5, placement = "central" }

[attacks]
membership = { method = "lira", shadow_models = 2, canaries = 10 }
mechanism = { trials = 2000 }

[thresholds]
max_epsilon = 10.0
""")

# CKKS encryption is randomised (and must be), and its ciphertexts are compressed: their sizes vary by a few
# bytes in ten thousand from one run to the next, resumed or not.
CIPHERTEXT_SIZES = {
    "bytes_up", "bytes_down", "bytes_up_per_round", "bytes_down_per_round", "setup_bytes", "bytes_per_parameter",
}


def comparable(value, key=""):
    """A report with timings left out and ciphertext sizes made approximate."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if key in CIPHERTEXT_SIZES and isinstance(value, (int, float)):
        return pytest.approx(value, rel=2e-3)
    return value


def audit_process(spec: Path, out: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(FEDSECURE), "audit", str(spec), "--out", str(out), "--device", "cpu", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "resume.toml"
    path.write_text(SPEC)
    return path


def test_a_killed_audit_resumes_to_the_uninterrupted_report(spec_file, tmp_path):
    whole = audit_process(spec_file, tmp_path / "whole")
    assert whole.wait(timeout=300) == 0, whole.stderr.read()

    out = tmp_path / "killed"
    victim = audit_process(spec_file, out)
    first_scenario = out / "stages" / "scenario-plain.json"
    deadline = time.monotonic() + 300
    while not first_scenario.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # no chance to clean up: only what was written atomically survives
    victim.wait(timeout=30)
    assert first_scenario.exists(), "the audit ended before its first scenario was kept"
    assert not (out / "report.json").exists(), "killed too late: the audit had finished"
    kept = sorted(p.name for p in (out / "stages").iterdir())
    assert "baselines.json" in kept and "scenario-client-dp.json" not in kept
    before = first_scenario.stat().st_mtime_ns

    with pytest.raises(OutputError, match="holds an unfinished run of this spec; pass --resume to continue it"):
        run_audit(load_spec(spec_file), out, device="cpu")  # without --resume nothing is overwritten

    resumed = audit_process(spec_file, out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()
    assert first_scenario.stat().st_mtime_ns == before  # the finished stage was kept, not run again
    uninterrupted = json.loads((tmp_path / "whole" / "report.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert comparable(report) == comparable(uninterrupted)
    assert report["scenarios"][2]["privacy"]["epsilon"] == uninterrupted["scenarios"][2]["privacy"]["epsilon"]
    # The mechanism audit ran for the DP scenario only, and kept its (seeded) figures across the resume.
    assert [s["privacy"]["mechanism_audit"] is not None for s in report["scenarios"]] == [False, False, True]
    assert report["scenarios"][2]["privacy"]["mechanism_audit"]["checks"][0]["trials"] == 2000
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_ctrl_c_says_how_to_resume(spec_file, tmp_path):
    out = tmp_path / "interrupted"
    victim = audit_process(spec_file, out)
    while not (out / "stages" / "baselines.json").exists() and victim.poll() is None:
        time.sleep(0.05)
    victim.send_signal(signal.SIGINT)
    assert victim.wait(timeout=120) == 130
    assert "add --resume to continue" in victim.stderr.read()


def test_resume_refuses_a_directory_of_another_run(spec_file, tmp_path):
    loaded = parse_spec(SPEC, origin="test")
    out = tmp_path / "out"
    run_audit(loaded, out, device="cpu", only=["plain"])
    with pytest.raises(OutputError, match="holds a full run of this spec"):
        run_audit(loaded, out, device="cpu", quick=True, resume=True)
    other = parse_spec(SPEC.replace("seed = 2", "seed = 3"), origin="test")
    with pytest.raises(OutputError, match="holds the results of another spec"):
        run_audit(other, out, device="cpu", resume=True)
    # A stage is read back as its finding: one this version cannot read is refused in one line, before any work.
    stage = out / "stages" / "baselines.json"
    stage.write_text(stage.read_text().replace('"train_seconds"', '"training_seconds"', 1))
    with pytest.raises(OutputError, match=re.escape(
        "baselines.json: not a stage this fedsecure can read (baselines.centralized: unknown field 'training_seconds'"
    )):
        run_audit(loaded, out, device="cpu", only=["plain"], resume=True)


def test_only_runs_the_named_scenarios_and_a_resume_adds_the_rest(tmp_path):
    loaded = parse_spec(SPEC.replace("[attacks]\nmembership", "[attacks.x]\n#").split("[attacks")[0], origin="test")
    out = tmp_path / "out"
    partial = run_audit(loaded, out, device="cpu", only=["ckks"])
    assert [s["name"] for s in partial["scenarios"]] == ["ckks"] and partial["only"] == ["ckks"]
    assert "Only these scenarios were run (--only): ckks" in (out / "report.md").read_text()
    kept = (out / "stages" / "scenario-ckks.json").stat().st_mtime_ns
    whole = run_audit(loaded, out, device="cpu", resume=True)
    assert [s["name"] for s in whole["scenarios"]] == ["plain", "ckks", "client-dp"] and whole["only"] is None
    assert (out / "stages" / "scenario-ckks.json").stat().st_mtime_ns == kept
    assert whole["scenarios"][1] == partial["scenarios"][0]
    with pytest.raises(SpecError, match="--only nope: no such scenario in the spec; it has plain, ckks, client-dp"):
        run_audit(loaded, tmp_path / "other", device="cpu", only=["nope"])


def test_quick_is_the_same_audit_made_small():
    spec = parse_spec(SPEC.replace("rounds = 3", "rounds = 40").replace("shadow_models = 2", "shadow_models = 16")
                      + '\n[attacks.inversion]\nmethod = "idlg"\nimages = 8\n', origin="test").spec
    quick = quick_spec(spec)
    assert quick.federation.rounds == QUICK_ROUNDS and quick.federation.local_epochs == 1
    assert quick.attacks.membership.shadow_models == QUICK_REFERENCE_MODELS
    assert quick.attacks.inversion.images == 2 and quick.attacks.inversion.restarts == 1
    assert quick.attacks.inversion.method == "idlg"
    assert quick.attacks.mechanism.trials == 2000  # already below the quick limit
    assert [s.model_dump() for s in quick.scenario] == [s.model_dump() for s in spec.scenario]
    assert (quick.data.sites, quick.model, quick.thresholds) == (spec.data.sites, spec.model, spec.thresholds)


def test_quick_report_says_it_is_not_evidence(tmp_path):
    loaded = parse_spec(SPEC.split("[attacks]")[0], origin="test")
    report = run_audit(loaded, tmp_path, device="cpu", quick=True)
    assert report["quick"] is True and report["spec"]["federation"]["rounds"] == QUICK_ROUNDS
    assert "Quick run" in (tmp_path / "report.md").read_text()
    assert 'id="quick-banner"' in (tmp_path / "report.html").read_text()


def test_a_run_continues_only_with_the_same_identity(tmp_path):
    mine = RunIdentity(spec_name="s", spec_sha256="a" * 64, quick=False, device="cpu", fedsecure="0.1.0")
    RunDirectory(tmp_path, mine, resume=False).begin()
    assert RunDirectory(tmp_path, mine, resume=True).resumed
    refusals = {
        "pass --resume to continue it": (mine, False),
        "holds the results of another spec": (dataclasses.replace(mine, spec_sha256="b" * 64), True),
        "holds a full run of this spec": (dataclasses.replace(mine, quick=True), True),
        "was started by fedsecure 0.1.0, this is 0.2.0": (dataclasses.replace(mine, fedsecure="0.2.0"), True),
        "was started on cpu; resume it there": (dataclasses.replace(mine, device="cuda:0"), True),
    }
    for message, (identity, resume) in refusals.items():
        with pytest.raises(OutputError, match=re.escape(message)):
            RunDirectory(tmp_path, identity, resume=resume)
    (tmp_path / "stages" / "scenario-x.json").write_text("{half a fil")
    with pytest.raises(OutputError, match="unreadable stage result; delete it to run that stage again"):
        RunDirectory(tmp_path, mine, resume=True).load("scenario-x")
    assert RunDirectory(tmp_path, mine, resume=True).load("scenario-y") is None
