"""End to end on the real shared chest X-rays: the foundation's acceptance run."""

import dataclasses
import json
from pathlib import Path

import pytest

from fedsecure.audit import load_spec, run_audit
from fedsecure.config.spec import AttacksSpec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fedavg_on_four_dirichlet_sites_beats_local_only(pneumonia_path, tmp_path):
    shipped = load_spec(REPO / "audits" / "pneumoniamnist.toml", data_path=pneumonia_path)
    assert shipped.spec.attacks.inversion is not None and shipped.spec.attacks.membership is not None
    # The attacks take half an hour on CPU; the foundation's contract is checked without them.
    loaded = dataclasses.replace(shipped, spec=shipped.spec.model_copy(update={"attacks": AttacksSpec()}))
    assert (loaded.spec.data.sites, loaded.spec.data.partition, loaded.spec.data.alpha) == (4, "dirichlet", 0.5)
    federation = loaded.spec.federation
    assert (federation.strategy, federation.rounds, loaded.spec.model.name) == ("fedavg", 20, "cnn")
    report = run_audit(loaded, tmp_path, device="cpu")
    assert json.loads((tmp_path / "report.json").read_text()) == report
    plain_scenario, ckks_scenario, sample_dp, client_dp = report["scenarios"]
    fedavg = plain_scenario["utility"]
    local_only = report["baselines"]["local_only"]
    centralized = report["baselines"]["centralized"]
    assert fedavg["auc"] >= 0.90
    assert fedavg["auc"] > local_only["auc"]
    assert centralized["auc"] is not None and centralized["auc"] >= 0.90
    assert sum(s["n_test"] for s in fedavg["per_site"]) == 468
    assert report["environment"]["data_sha256"]

    # CKKS: the same model (bit for bit: both sum on one fixed-point grid), at a measured price in bytes
    assert (plain_scenario["protocol"], ckks_scenario["protocol"]) == ("plain", "ckks")
    assert abs(ckks_scenario["utility"]["auc"] - fedavg["auc"]) <= 0.005
    assert ckks_scenario["utility"] == fedavg
    plain_cost, ckks_cost = plain_scenario["cost"], ckks_scenario["cost"]
    assert plain_cost["bytes_per_parameter"] == pytest.approx(4.0, rel=1e-3)
    assert 16 < ckks_cost["bytes_per_parameter"] <= 34
    assert ckks_cost["bytes_up_per_round"] > 7 * plain_cost["bytes_up_per_round"]
    assert ckks_cost["encrypt_seconds"] > 0 and ckks_cost["aggregate_seconds"] > 0 and ckks_cost["decrypt_seconds"] > 0
    assert ckks_scenario["protocol_parameters"]["preset"] == "n4096-q59"

    # DP: both levels train above chance and stay within their budget
    assert sample_dp["privacy"]["guarantee"] == "sample-level DP"
    assert client_dp["privacy"]["guarantee"] == "client-level DP"
    # The noise comes from the OS CSPRNG (secure_rng), so this AUC differs run to run: 0.745 in one CI run of
    # the spec, above 0.75 in the others. Well above chance is the claim, not a fixed figure.
    assert sample_dp["utility"]["auc"] >= 0.70
    # Client-level DP at epsilon 8 with four sites: the noise, calibrated against another site, is more than
    # the CNN survives (README); its cost in utility is the finding.
    assert client_dp["utility"]["auc"] is not None and client_dp["utility"]["auc"] < fedavg["auc"] - 0.1
    for scenario in (sample_dp, client_dp):
        privacy = scenario["privacy"]
        assert 0 < privacy["epsilon"] <= 8.0 and privacy["delta"] == 1e-5 and privacy["accountant"] == "rdp"
        assert privacy["noise_multiplier"] > 0 and privacy["steps"] > 0 and not privacy["stopped_early"]
        epsilons = [r["epsilon"] for r in scenario["rounds"]]
        assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(privacy["epsilon"])
        # The shipped spec is evidence: noise from the OS CSPRNG, so the epsilon is a guarantee, not a simulation.
        assert privacy["simulation"] is False and not any("secure_rng = false" in w for w in privacy["warnings"])
        assert set(privacy["epsilon_by_adversary"]) == {"public", "server", "site"}
        assert privacy["epsilon"] == max(p["epsilon"] for p in privacy["epsilon_by_adversary"].values())
    assert client_dp["server_view"] == "ciphertext" and client_dp["privacy"]["unit"].startswith("site")
    assert client_dp["privacy"]["worst_party"] == "site"
    assert len(sample_dp["privacy"]["per_site"]) == 4
    assert plain_scenario["privacy"]["epsilon"] is None
