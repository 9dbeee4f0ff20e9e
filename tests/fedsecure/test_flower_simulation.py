"""`fedsecure audit --engine flower`: the same report, from Flower's simulation engine."""

from __future__ import annotations

import os

import pytest

from fedsecure.audit import run_audit
from fedsecure.cli import main
from fedsecure.config.spec import parse_spec
from tests.fedsecure.tiny_specs import PLAIN_AND_CKKS, TINY_FEDAVG, tiny_spec

try:
    import flwr  # noqa: F401 (only whether the extra is installed)
except ImportError:
    if os.environ.get("CI"):  # CI installs the extra: a missing Flower there is a broken setup, not a skip
        raise
    pytest.skip("the Flower extra is not installed (pip install 'fedsecure[flower]')", allow_module_level=True)

PLAIN_ONLY = """
[[scenario]]
name = "plain"
"""
AUC_BOUND_EVENT = "the final pooled AUC comes from the sites' score histograms: within "

CLIENT_DP = """
[[scenario]]
name = "client-dp"
protocol = "ckks"
dp = { level = "client", epsilon = 8.0, delta = 1e-3, clip = 0.5, placement = "distributed" }
"""


@pytest.mark.slow
def test_flower_simulation_gives_the_in_process_report(tmp_path):
    # 200 test images per site, not the tiny spec's 20: Flower pools the AUC from the sites' score histograms,
    # within 0.001 of the exact AUC only when few pairs of scores from different sites share a bin, and with
    # 20 images one such pair already moves it by 1/800.
    # Plain and client-level DP under CKKS (distributed noise, seeded): per-round accuracies equal on both engines
    # show CKKS on Flower, the sites' noise shares included, trains the in-process model.
    text = tiny_spec("flower-sim", 3, TINY_FEDAVG, PLAIN_ONLY, CLIENT_DP)
    text = text.replace("test_samples = 40", "test_samples = 400")
    loaded = parse_spec(text, "<test>")
    with pytest.warns(UserWarning):  # client-level DP's weakened-guarantee warnings, on both engines
        in_process = run_audit(loaded, tmp_path / "in-process", device="cpu")
        on_flower = run_audit(loaded, tmp_path / "flower", device="cpu", engine="flower")

    for mine, theirs in zip(on_flower["scenarios"], in_process["scenarios"], strict=True):
        assert (mine["engine"], theirs["engine"]) == ("flower", "in-process")
        # The only event: the final pooled AUC's bound, which the Flower run states and keeps.
        assert all(e.startswith(AUC_BOUND_EVENT) for e in mine["events"]), mine["events"]
        bound = float(mine["events"][0].split("within ")[1].split(" ")[0]) if mine["events"] else 0.0
        assert abs(mine["utility"]["auc"] - theirs["utility"]["auc"]) <= bound + 1e-12
        # Same model; Flower's utility comes from the sites' counts: the accuracy exact, the AUC within 0.001.
        _assert_same_utility(mine["utility"], theirs["utility"])
        assert [r["accuracy"] for r in mine["rounds"]] == [r["accuracy"] for r in theirs["rounds"]]
        assert [r["auc"] for r in mine["rounds"]] == pytest.approx(
            [r["auc"] for r in theirs["rounds"]], abs=AUC_TOLERANCE
        )
        assert [r["participants"] for r in mine["rounds"]] == [r["participants"] for r in theirs["rounds"]]
        assert mine["server_view"] == theirs["server_view"]
        assert mine["privacy"]["epsilon"] == theirs["privacy"]["epsilon"]
        assert mine["privacy"].get("warnings") == theirs["privacy"].get("warnings")
        assert mine["cost"]["bytes_up_per_round"] == pytest.approx(theirs["cost"]["bytes_up_per_round"], rel=2e-3)
    assert set(on_flower) == set(in_process)
    assert "ran on Flower" in (tmp_path / "flower" / "report.md").read_text()


AUC_TOLERANCE = 1e-3  # the pooled AUC from score histograms (fedsecure.fl.evaluation.utility_from_histograms)


def _assert_same_utility(mine: dict, theirs: dict) -> None:
    assert mine["accuracy"] == theirs["accuracy"]
    assert mine["auc"] == pytest.approx(theirs["auc"], abs=AUC_TOLERANCE)
    assert [{**s, "auc": None} for s in mine["per_site"]] == [{**s, "auc": None} for s in theirs["per_site"]]
    assert [s["auc"] for s in mine["per_site"]] == pytest.approx(
        [s["auc"] for s in theirs["per_site"]], abs=AUC_TOLERANCE
    )


SAMPLE_DP = """
[[scenario]]
name = "sample-dp"
dp = { level = "sample", epsilon = 8.0, delta = 1e-3, clip = 1.0 }
"""


ADAPTIVE = """
[[scenario]]
name = "adaptive"
dp = { level = "client", epsilon = 8.0, delta = 1e-3, clip = 0.5, placement = "central", adaptive_quantile = 0.5 }
"""


@pytest.mark.slow
def test_sample_level_dp_and_adaptive_clipping_on_flower_give_the_in_process_model_and_epsilon(tmp_path):
    """DP state lives at the SuperNodes between Flower's per-message processes.

    Each keeps its DP-SGD accountant, its sampling and noise generators and the adaptive bound,
    and reports the public part (the accountant's history, the bound) to the server.
    """
    text = tiny_spec("flower-dp", 3, TINY_FEDAVG, SAMPLE_DP, ADAPTIVE)
    text = text.replace("test_samples = 40", "test_samples = 400")
    loaded = parse_spec(text, "<test>")
    with pytest.warns(UserWarning):  # seeded noise, central noise: the scenarios' own warnings, on both engines
        in_process = run_audit(loaded, tmp_path / "in-process", device="cpu")
        on_flower = run_audit(loaded, tmp_path / "flower", device="cpu", engine="flower")
    for mine, theirs in zip(on_flower["scenarios"], in_process["scenarios"], strict=True):
        assert (mine["engine"], theirs["engine"]) == ("flower", "in-process")
        # The same model every round: DP-SGD drew the same batches and the same noise at each site.
        assert [r["accuracy"] for r in mine["rounds"]] == [r["accuracy"] for r in theirs["rounds"]]
        _assert_same_utility(mine["utility"], theirs["utility"])
        for field in ("epsilon", "steps", "noise_multiplier", "per_site", "clip_per_round", "rounds_completed"):
            assert mine["privacy"].get(field) == theirs["privacy"].get(field), field
        assert mine["privacy"]["warnings"] == theirs["privacy"]["warnings"]
    sample, adaptive = on_flower["scenarios"]
    assert sample["privacy"]["steps"] > 3 and len(sample["privacy"]["per_site"]) == 2
    assert len(set(adaptive["privacy"]["clip_per_round"])) == 4, "the bound moved after each of the 3 rounds"


@pytest.mark.parametrize(
    ("scenarios", "engine", "message"),
    [
        (PLAIN_AND_CKKS, "spark", "--engine spark: unknown engine"),
    ],
)
def test_what_flower_cannot_run_is_refused_in_one_line(scenarios, engine, message, tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(tiny_spec("refused", 0, TINY_FEDAVG, scenarios))
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", str(spec), "--engine", engine, "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "out").exists()



def test_a_site_answers_the_setup_without_revealing_its_key_and_refuses_a_spec_it_did_not_agree_to():
    import tenseal as ts
    from flwr.app import RecordDict

    from fedsecure.errors import FedsecureError
    from fedsecure.flower.site_side import LocalSite, answer_setup
    from fedsecure.secure.ckks import CKKSAggregation

    text = tiny_spec("pinned", 0, TINY_FEDAVG, PLAIN_AND_CKKS)
    loaded = parse_spec(text, "<test>")
    spec = loaded.spec
    data = spec.data.federated(spec.seed)
    secret = CKKSAggregation().site_secret()
    local = LocalSite(data=lambda k, spec: data.sites[k], secret=lambda: secret)
    node_config = {"site": 1, "spec-sha256": loaded.sha256}

    answer = answer_setup(text, "ckks", node_config, local, RecordDict())
    assert answer["n_train"] == data.sites[1].n_train and answer["claimed"] == 1
    assert not ts.context_from(bytes(answer["material"])).is_private(), "the server never receives the secret key"
    assert answer["key_id"] == answer_setup(text, "ckks", node_config, local, RecordDict())["key_id"]

    changed = text.replace('name = "pinned"', 'name = "pinned-but-changed"')
    with pytest.raises(FedsecureError, match="this site agreed to"):
        answer_setup(changed, "ckks", node_config, local, RecordDict())


def test_a_site_whose_own_data_hold_one_class_takes_part(tmp_path):
    # A Dirichlet split gives some hospitals a single class; the whole dataset still needs two.
    import numpy as np

    from fedsecure.data.medmnist import load_medmnist
    from fedsecure.errors import DataError
    from fedsecure.flower.site_side import from_node_config
    from tests.conftest import write_medmnist

    sizes = (("train", 12), ("val", 4), ("test", 6))
    zeros = {f"{split}_labels": np.zeros((n, 1), dtype=np.int64) for split, n in sizes}
    path = write_medmnist(tmp_path / "site.npz", **zeros)
    with pytest.raises(DataError, match="single class"):
        load_medmnist(path)
    spec = parse_spec('name = "s"\n[[scenario]]\nname = "p"\n', "t").spec
    site = from_node_config({"data-path": str(path)}).data(3, spec)
    assert site.name == "site-3" and site.n_train == 12 and set(site.train.labels) == {0}


@pytest.mark.slow
def test_scaffold_on_flower_trains_the_in_process_model(tmp_path):
    """Each SuperNode keeps its control variate between Flower's messages: rounds 2 and 3 depend on it."""
    federation = TINY_FEDAVG.replace("[federation]", '[federation]\nstrategy = "scaffold"\nlr = 0.2\nlocal_epochs = 2')
    text = tiny_spec("flower-scaffold", 3, federation, PLAIN_ONLY).replace("test_samples = 40", "test_samples = 400")
    loaded = parse_spec(text, "<test>")
    in_process = run_audit(loaded, tmp_path / "in-process", device="cpu")
    on_flower = run_audit(loaded, tmp_path / "flower", device="cpu", engine="flower")
    (mine,), (theirs,) = on_flower["scenarios"], in_process["scenarios"]
    assert [r["auc"] for r in mine["rounds"]] == pytest.approx([r["auc"] for r in theirs["rounds"]], abs=AUC_TOLERANCE)
    assert theirs["cost"]["bytes_per_parameter"] == pytest.approx(2 * 4.0, rel=0.01)  # model and control halves
    _assert_same_utility(mine["utility"], theirs["utility"])
