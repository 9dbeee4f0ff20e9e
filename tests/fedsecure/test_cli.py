import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedsecure.cli import main

TINY = """
name = "tiny"
seed = 3

[data]
source = "synthetic"
sites = 2
partition = "iid"
train_samples = 48
val_samples = 4
test_samples = 24

[federation]
rounds = 2
batch_size = 16

[[scenario]]
name = "plain"

[[scenario]]
name = "ckks"
protocol = "ckks"

[thresholds]
max_epsilon = 8.0
"""


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_audit_writes_the_report_contract(tiny_spec, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = cli(["audit", tiny_spec, "--out", out, "--device", "cpu"], capsys)
    assert code == 0, stdout
    # The terminal summary: a row per scenario, the failed checks, the link to report.html.
    rows = [line for line in stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["plain", "ckks"]
    assert "plain FAIL: no differential-privacy guarantee" in stdout
    assert (out / "report.html").resolve().as_uri() in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["schema_version"] and report["spec"]["name"] == "tiny"
    env = report["environment"]
    assert {"fedsecure", "torch", "device", "seed", "spec_sha256", "data_sha256"} <= set(env)
    assert env["seed"] == 3 and env["device"] == "cpu" and len(env["data_sha256"]) == 64
    for baseline in ("centralized", "local_only"):
        assert {"auc", "accuracy", "per_site"} <= set(report["baselines"][baseline])
    assert len(report["baselines"]["local_only"]["per_site"]) == 2
    scenario, encrypted = report["scenarios"]
    assert scenario["name"] == "plain" and scenario["protocol"] == "plain" and scenario["dp"] is None
    assert set(scenario["utility"]) == {
        "auc", "accuracy", "per_site", "dice", "dice_per_class", "hd95", "missed_structures", "spurious_structures",
        "examples",
    }
    assert scenario["utility"]["dice"] is None and report["metric"] == "auc"  # a classification audit
    assert [s["site"] for s in scenario["utility"]["per_site"]] == ["site-0", "site-1"]
    assert {
        "epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "accountant", "empirical_epsilon_lb"
    } <= set(scenario["privacy"])
    assert scenario["privacy"]["epsilon"] is None
    cost = scenario["cost"]
    assert {"train_seconds", "protect_seconds", "bytes_up_per_round", "bytes_down_per_round"} <= set(cost)
    assert cost["train_seconds"] > 0 and cost["bytes_up_per_round"] == 2 * (23650 * 4 + 4)
    assert scenario["attacks"] == []
    assert scenario["verdict"]["pass"] is False
    assert "no differential-privacy guarantee" in scenario["verdict"]["reasons"][0]
    assert [r["round"] for r in scenario["rounds"]] == [1, 2]
    assert scenario["server_view"] == "plaintext" and encrypted["server_view"] == "ciphertext"
    assert cost["bytes_per_parameter"] == pytest.approx(4.0, rel=1e-3)
    assert 30 < encrypted["cost"]["bytes_per_parameter"] < 34
    assert encrypted["cost"]["setup_bytes"] > 0 and encrypted["protocol_parameters"]["preset"] == "n4096-q59"
    assert encrypted["utility"]["auc"] == pytest.approx(scenario["utility"]["auc"], abs=0.005)
    markdown = (out / "report.md").read_text()
    assert "| plain | plain |" in markdown and "| ckks | ckks |" in markdown and "FAIL" in markdown
    assert "holds no decryption key" in markdown


def test_same_spec_same_numbers(tiny_spec, tmp_path, capsys):
    reports = []
    for name in ("a", "b"):
        assert cli(["audit", tiny_spec, "--out", tmp_path / name, "--device", "cpu"], capsys)[0] == 0
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))

    def strip(report):
        return [(s["utility"], [x["auc"] for x in s["rounds"]]) for s in report["scenarios"]]

    assert strip(reports[0]) == strip(reports[1])
    assert reports[0]["baselines"]["centralized"]["auc"] == reports[1]["baselines"]["centralized"]["auc"]


def test_console_script_runs_as_installed(tmp_path):
    result = subprocess.run(
        [str(Path(sys.executable).with_name("fedsecure")), "audit", str(tmp_path / "absent.toml")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent.toml'}: no such spec file"
