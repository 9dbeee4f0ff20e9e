"""The membership audit: attacks on the released model, the canary audit, and what the report says."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.auditing import one_run_ceiling
from fedsecure.audit import load_spec, run_audit
from fedsecure.config.spec import parse_spec
from fedsecure.fl.federation import Federation

REPO = Path(__file__).resolve().parents[2]

SPEC = """
name = "membership-tiny"
seed = 0

[data]
source = "synthetic"
sites = 2
partition = "iid"
train_samples = 60
val_samples = 40
test_samples = 40

[model]
name = "classifier"

[federation]
rounds = 2
local_epochs = 3
batch_size = 16
lr = 0.005

[[scenario]]
name = "plain"

[[scenario]]
name = "client-dp"
protocol = "ckks"
dp = { level = "client", epsilon = 8.0, delta = 1e-3, clip = 0.5, placement = "distributed" }

[[scenario]]
name = "secagg"
protocol = "secagg"

[attacks]
membership = { method = "lira", shadow_models = 4, canaries = 20 }

[thresholds]
max_membership_tpr_at_0_1_fpr = 0.5
"""


def test_membership_findings_reach_the_report(tmp_path, monkeypatch):
    seeds = []
    original = Federation.__init__

    def recording(self, *args, **kwargs):
        seeds.append(kwargs.get("seed"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(Federation, "__init__", recording)
    report = run_audit(parse_spec(SPEC, origin="test"), tmp_path, device="cpu")
    # Per scenario: the target federation on the spec's seed, then 4 reference runs and 1 canary run, each on a
    # seed of its own: an attacker replaying the target's seeded noise or batch order would not be an attacker.
    assert len(seeds) == 3 * 6 and seeds[0] == seeds[6] == seeds[12] == 0
    replicas = seeds[1:6] + seeds[7:12] + seeds[13:]
    assert 0 not in replicas and len(set(replicas)) == len(replicas)
    for scenario in report["scenarios"]:
        found = {(a["method"], a["position"]): a for a in scenario["attacks"]}
        assert list(found) == [(m, p) for p in ("external", "server", "client") for m in ("lira", "loss")]
        lira, loss = found["lira", "external"], found["loss", "external"]
        assert (lira["method"], loss["method"]) == ("lira", "loss")  # the loss attack is the reference point
        assert lira["position"] == "external" and lira["status"] == "ok"
        assert (lira["members"], lira["non_members"]) == (60, 80)  # training vs held-out test + validation
        assert (lira["shadow_models"], lira["shadow_models_failed"], loss["shadow_models"]) == (4, 0, 0)
        assert 0 <= lira["auc"] <= 1 and lira["roc"]["fpr"][0] == 0.0
        rate = lira["tpr_at_fpr"]["0.01"]
        assert rate["low"] <= rate["tpr"] <= rate["high"] and not rate["resolved"]  # 80 non-members
        assert len(lira["most_exposed"]) == 10 and {e["site"] for e in lira["most_exposed"]} <= {"site-0", "site-1"}
        canary = scenario["privacy"]["canary_audit"]
        assert canary["canaries"] == 20 and canary["guesses"] == 4
        # One pre-registered bound (the canaries', whose membership was randomised), never a maximum of several;
        # the attacks on real, non-randomised membership report their advantage, not an epsilon bound.
        assert "epsilon_lb" not in lira and "epsilon_lb" not in loss and lira["advantage"] is not None
        assert scenario["privacy"]["empirical_epsilon_lb"] == canary["epsilon_lb"]
        # 4 guesses, all right, could show at most this: far below any epsilon worth stating.
        ceiling = one_run_ceiling(20, 4, canary["delta"], 0.95)
        assert scenario["privacy"]["empirical_epsilon_ceiling"] == pytest.approx(ceiling) and ceiling < 2.5
        # 80 non-members cannot resolve 0.1%: the threshold cannot be shown to hold
        assert scenario["verdict"]["pass"] is False
        assert "cannot resolve a false-positive rate of 0.1%" in " ".join(scenario["verdict"]["reasons"])
        # Under CKKS the server holds no site's update: its seat scores the released model it receives, and says so.
        server, client = found["lira", "server"], found["lira", "client"]
        if scenario["protocol"] == "ckks":
            assert server["observed"].startswith("the released model only: under CKKS")
            assert server["auc"] == lira["auc"]
        elif scenario["protocol"] == "secagg":
            # Under SecAgg+ the server unmasks each round's sum: it scores the global models, never a site's own.
            # Two rounds: the state after round 1 (the initial model has seen no data) and the released model.
            assert server["observed"].startswith("the global models after rounds 1, which it unmasked"), server
        else:
            assert server["observed"].startswith("each site's local model of rounds 1, 2")
        # Another site (site-0 by default) targets the other site's 30 members and 40 held-out images only.
        assert (client["members"], client["non_members"]) == (30, 40) and "site-0's seat" in client["observed"]
    markdown = (tmp_path / "report.md").read_text()
    assert "client-dp: the empirical audit (20 canaries, 4 guesses) could show at most epsilon" in markdown
    cached = sorted(p.name for p in (tmp_path / "cache" / "membership-plain").iterdir())
    assert cached == [f"reference-{k:03d}.npz" for k in range(4)]
    assert "Membership inference from each seat" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text()) == report


@pytest.mark.slow
def test_lira_beats_the_loss_attack_on_a_memorizing_federation(pneumonia_path, tmp_path):
    # The shipped spec's plain scenario, with 8 reference federations instead of 16 (CI time).
    loaded = load_spec(REPO / "audits" / "membership-pneumoniamnist.toml", data_path=pneumonia_path)
    spec = loaded.spec
    membership = spec.attacks.membership.model_copy(update={"shadow_models": 8})
    smaller = spec.model_copy(
        update={"scenario": spec.scenario[:1], "attacks": spec.attacks.model_copy(update={"membership": membership})}
    )
    report = run_audit(dataclasses.replace(loaded, spec=smaller), tmp_path, device="cpu")
    found = {(a["method"], a["position"]): a for a in report["scenarios"][0]["attacks"]}
    assert set(found) == {(m, p) for m in ("lira", "loss") for p in ("external", "server", "client")}
    lira, loss = found["lira", "external"], found["loss", "external"]
    assert lira["auc"] > loss["auc"]
    assert lira["tpr_at_fpr"]["0.01"]["tpr"] >= 2 * loss["tpr_at_fpr"]["0.01"]["tpr"]
    # The server sees each site's model after local training: it leaks more than the averaged released model.
    server = found["lira", "server"]
    assert server["auc"] > lira["auc"]
    assert server["tpr_at_fpr"]["0.01"]["tpr"] > lira["tpr_at_fpr"]["0.01"]["tpr"]
    client = found["lira", "client"]  # another site targets the other three sites' patients only
    assert client["members"] + client["non_members"] < lira["members"] + lira["non_members"]
    for finding in found.values():
        print(finding["method"], finding["position"], finding["auc"], finding["tpr_at_fpr"]["0.01"])
    assert report["scenarios"][0]["privacy"]["canary_audit"]["epsilon_lb"] > 0


def _seat_signals_of(protocol: str, **observe) -> dict:
    """Every seat's signals of a tiny 3-round federation under ``protocol`` (2 synthetic sites)."""
    from fedsecure.audit.seat_signals import seat_signals
    from fedsecure.fl.task import TASKS
    from fedsecure.fl.views import seat_views
    from fedsecure.models import build_model
    from fedsecure.positions import Position

    spec = parse_spec(SPEC.replace("rounds = 2", "rounds = 3"), origin="test").spec
    data = spec.data.federated(spec.seed)
    scenario = spec.scenario[0].model_copy(update={"protocol": protocol})
    model = build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
    federation = Federation(data, model, spec.federation.strategy_instance(), rounds=3, seed=0, keep_messages="ends",
                            training=scenario.local_training(spec.federation, spec.data.task),
                            protocol=scenario.protocol_instance())
    views = seat_views(federation.run(), federation.state, federation.recipe, federation.server_private, "site-0")
    images = data.sites[0].test.images[:4]
    labels = data.sites[0].test.labels[:4]
    return seat_signals(views, [Position.SERVER], images, np.zeros(4, int), ["site-0", "site-1"], torch.device("cpu"),
                        labels, TASKS.get(spec.data.task), **observe)


def test_each_protocol_shows_the_server_seat_what_its_server_holds():
    # Plain: the sites' local models of the kept rounds (first and last); the global states it also holds are
    # not scored separately. SecAgg+: the global models after rounds 1 and 2 (never the initial model, nor a
    # site's update). CKKS: the released model only.
    assert sorted(_seat_signals_of("plain")) == ["server@1", "server@3", "server@released"]
    assert sorted(_seat_signals_of("secagg")) == ["server@global-1", "server@global-2", "server@released"]
    assert sorted(_seat_signals_of("ckks")) == ["server@released"]
    # A plain reference federation imitating a SecAgg+ target's server reads no update: the same signals.
    assert sorted(_seat_signals_of("plain", server_reads_updates=False)) == sorted(_seat_signals_of("secagg"))


def test_a_seat_s_signals_are_taken_in_round_order_whatever_their_form():
    from fedsecure.audit.membership import _signal_names
    from fedsecure.positions import Position

    signals = dict.fromkeys(["server@10", "server@released", "server@2", "server@global-3", "client@1"])
    assert _signal_names(Position.SERVER, signals) == ["server@2", "server@global-3", "server@10", "server@released"]
