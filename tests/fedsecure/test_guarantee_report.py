"""A tiny audit's stated guarantee, recomputed from report.json alone by an independent accountant."""

from __future__ import annotations

import math

import dp_accounting as dpa
import pytest
from dp_accounting.rdp import rdp_privacy_accountant

from fedsecure.audit import run_audit
from fedsecure.config.spec import parse_spec
from fedsecure.privacy import spent_epsilon
from fedsecure.privacy.accounting import gated_gaussian_epsilon

# Client-level DP with every complication: distributed noise under CKKS, Poisson client sampling, adaptive clipping.
SPEC = """
name = "guarantee-tiny"
seed = 2

[data]
source = "synthetic"
sites = 4
partition = "iid"
train_samples = 80
val_samples = 20
test_samples = 40
image_size = 16

[model]
name = "lenet-dlg"

[federation]
rounds = 4
batch_size = 8
clients_per_round = 2

[[scenario]]
name = "client-dp"
protocol = "ckks"

[scenario.dp]
level = "client"
epsilon = 8.0
delta = 1e-5
clip = 0.5
placement = "distributed"
adaptive_quantile = 0.5
secure_rng = true

[thresholds]
max_epsilon = 10.0
"""


def test_every_party_has_its_epsilon_and_a_reviewer_can_recompute_the_headline(tmp_path):
    report = run_audit(parse_spec(SPEC, origin="test"), tmp_path, device="cpu")
    privacy = report["scenarios"][0]["privacy"]
    by_party = privacy["epsilon_by_adversary"]
    assert set(by_party) == {"public", "server", "site"}
    assert privacy["epsilon"] == max(p["epsilon"] for p in by_party.values())
    assert by_party[privacy["worst_party"]]["epsilon"] == privacy["epsilon"] <= 8.0
    # Amplification by client sampling: against the public only (CSPRNG participation, gated), and only where it
    # beats counting the rounds each site took part in; never against the parties that see who took part.
    m = privacy["mechanism"]
    gated = gated_gaussian_epsilon(m["noise_multiplier"], 0.5, m["steps"], m["delta"])
    counted = spent_epsilon([(m["noise_multiplier"], 1.0, m["max_participation"])], m["delta"])
    assert by_party["public"]["epsilon"] == pytest.approx(min(gated, counted))
    assert by_party["public"]["sample_rate"] == (0.5 if gated < counted else 1.0)
    assert by_party["server"]["sample_rate"] == by_party["site"]["sample_rate"] == 1.0

    # A reviewer with privacy.mechanism and Google's RDP accountant: another site subtracts its own share of the
    # noise (1/min_sites of the variance) and faces the update's and the count's Gaussians on the rounds it saw.
    assert m["placement"] == "distributed" and m["min_sites"] == 2 and m["count_sensitivity"] == 0.5
    fraction = max(m["min_sites"] - 1, 1) / m["min_sites"]
    joint = dpa.ComposedDpEvent([
        dpa.GaussianDpEvent(m["update_noise_multiplier"] * math.sqrt(fraction)),
        dpa.GaussianDpEvent(m["count_noise_stddev"] / m["count_sensitivity"] * math.sqrt(fraction)),
    ])
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(dpa.SelfComposedDpEvent(joint, m["max_participation"]))
    google = accountant.get_epsilon(m["delta"])
    assert privacy["worst_party"] == "site"
    assert privacy["epsilon"] == pytest.approx(google, rel=0.02) or privacy["epsilon"] > google
    assert report["scenarios"][0]["verdict"]["pass"] is True
