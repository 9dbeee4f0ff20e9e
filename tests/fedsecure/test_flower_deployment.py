"""A real Flower deployment on loopback: one SuperLink, one SuperNode per site, `flwr run`.

The test starts and stops every process itself (tests/flower_loopback.py:
each in its own process group, every wait bounded) and checks that:

* 3 rounds of plain FedAvg and of CKKS on PneumoniaMNIST give the final
  global model the in-process engine gives for the same spec and seed;
* a SuperNode killed during a CKKS run is survived: the round completes with
  the remaining sites, later rounds go on without it, and the finding says so;
* no site's reply carries per-image labels or predictions: the server's record
  of what it received (``received-<scenario>.jsonl``) holds the updates, the
  final model and the evaluation as counts of fixed shapes, nothing of a test
  set's length.

That a site refuses a server's inflated site count is checked on the real
ClientApp, without a deployment, in ``test_flower_site_checks.py``.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PNEUMONIA

try:
    import flwr  # noqa: F401 (only whether the extra is installed)
except ImportError:
    if os.environ.get("CI"):  # CI installs the extra: a missing Flower there is a broken setup, not a skip
        raise
    pytest.skip("the Flower extra is not installed (pip install 'fedsecure[flower]')", allow_module_level=True)

from fedsecure.config.spec import LoadedSpec, load_spec
from fedsecure.data.site_files import write_site_files
from fedsecure.fl.evaluation import SCORE_BINS
from fedsecure.fl.federation import Federation
from fedsecure.flower.keys import write_site_secret
from fedsecure.models import build_model
from tests.flower_loopback import LoopbackDeployment, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SITES = 3
SPEC = f"""
name = "flower-deployment"
seed = 0

[data]
source = "medmnist"
path = "{PNEUMONIA}"
sites = {SITES}
partition = "iid"
train_subset = 600

[model]
name = "cnn"

[federation]
rounds = 3
batch_size = 32
lr = 0.05

[[scenario]]
name = "plain"

[[scenario]]
name = "ckks"
protocol = "ckks"

"""
# The kill run: two rounds are enough to see a round complete without the killed site.
KILL_SPEC = SPEC.replace("rounds = 3", "rounds = 2") + """
[[scenario]]
name = "ckks-kill"
protocol = "ckks"
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two loopback deployments of 3 sites, all three runs submitted at once.

    Flower's latency is mostly polling, so the runs overlap well: plain and CKKS on the first
    deployment; on the second a CKKS run whose third SuperNode is killed as soon as round 1 has finished.
    """
    if not PNEUMONIA.is_file():
        pytest.skip(f"shared data not found at {PNEUMONIA}")
    root = tmp_path_factory.mktemp("flower")
    spec, kill_spec = root / "spec.toml", root / "kill.toml"
    spec.write_text(SPEC)
    kill_spec.write_text(KILL_SPEC)
    loaded, kill_loaded = load_spec(spec), load_spec(kill_spec)
    site_files = write_site_files(loaded.spec, root / "sites")
    key = root / "ckks.key"
    write_site_secret(loaded, "ckks", key)
    with LoopbackDeployment(root / "a") as first, LoopbackDeployment(root / "b") as second:
        for deployment, pinned in ((first, loaded), (second, kill_loaded)):
            for k, path in enumerate(site_files):
                deployment.start_supernode(k, data_path=path, ckks_secret=key, spec_sha256=pinned.sha256)
        with ThreadPoolExecutor() as submitting:  # each `flwr run` takes seconds to build and send the app
            submitted = [submitting.submit(first.submit, spec, s, root / f"out-{s}", round_timeout=240)
                         for s in ("plain", "ckks")]
            # Long enough for a loaded 2-core machine to start three ClientApps; a killed site costs one wait.
            submitted.append(submitting.submit(second.submit, kill_spec, "ckks-kill", root / "out-ckks-kill",
                                               round_timeout=90))
            for done in submitted:
                done.result()
        progress = root / "out-ckks-kill" / "progress-ckks-kill.jsonl"
        killer = threading.Thread(target=_kill_after_round_one, args=(second, progress), daemon=True)
        killer.start()
        yield Runs(root=root, loaded=loaded, first=first, second=second, killer=killer, site_files=site_files)


@dataclass
class Runs:
    root: Path
    loaded: LoadedSpec
    first: LoopbackDeployment
    second: LoopbackDeployment
    killer: threading.Thread
    site_files: list[Path]


def _kill_after_round_one(deployment: LoopbackDeployment, progress: Path) -> None:
    wait_for(lambda: progress.is_file() and progress.read_text().count("\n") >= 1, 400, "round 1 of the run")
    deployment.kill_supernode(2)  # its SuperNode, SuperExec and any ClientApp, mid-run


def _in_process_final_model(loaded, scenario_name: str) -> np.ndarray:
    spec = loaded.spec
    scenario = next(s for s in spec.scenario if s.name == scenario_name)
    data = spec.data.federated(spec.seed)
    model = build_model(spec.model.name, data.in_channels, data.n_classes, data.image_size, spec.seed)
    federation = Federation(data, model, spec.federation.strategy_instance(), rounds=spec.federation.rounds,
                            training=scenario.local_training(spec.federation, spec.data.task),
                            protocol=scenario.protocol_instance(),
                            seed=spec.seed)
    return federation.run().trace.final_global.numpy()


@pytest.mark.parametrize("scenario", ["plain", "ckks"])
def test_flower_deployment_trains_the_in_process_model(runs, scenario):
    out = runs.root / f"out-{scenario}"
    finding = runs.first.wait_for_finding(out, scenario, seconds=400)

    # The only event: the bound on the final pooled AUC from the sites' score histograms.
    assert finding["engine"] == "flower"
    assert all(e.startswith("the final pooled AUC comes from the sites' score histograms") for e in finding["events"])
    assert [r["participants"] for r in finding["rounds"]] == [[f"site-{k}" for k in range(SITES)]] * 3
    assert finding["server_view"] == ("ciphertext" if scenario == "ckks" else "plaintext")
    assert all(r["auc"] is not None for r in finding["rounds"]), "every round's model was evaluated at the sites"
    flower_model = np.load(out / f"final-model-{scenario}.npz")["vector"]
    expected = _in_process_final_model(runs.loaded, scenario)
    # Both engines sum on the same fixed-point grid from the same seeds: equal up to float rounding.
    np.testing.assert_allclose(flower_model, expected, rtol=0, atol=1e-6)
    assert finding["utility"]["auc"] > 0.6


def test_a_supernode_killed_during_a_ckks_run_is_survived(runs):
    finding = runs.second.wait_for_finding(runs.root / "out-ckks-kill", "ckks-kill", seconds=500)
    runs.killer.join(timeout=60)
    assert not runs.killer.is_alive()
    participants = [r["participants"] for r in finding["rounds"]]
    assert participants == [["site-0", "site-1", "site-2"], ["site-0", "site-1"]], "both rounds completed"
    assert any("site-2 dropped" in event for event in finding["events"]), finding["events"]
    assert [s["site"] for s in finding["utility"]["per_site"]] == ["site-0", "site-1"]
    assert np.isfinite(np.load(runs.root / "out-ckks-kill" / "final-model-ckks-kill.npz")["vector"]).all()


# What a site's reply may hold besides config scalars: its protected update (a plaintext float vector, or
# CKKS ciphertexts in a config record), the final model, and its evaluation as counts of fixed shapes.
EVALUATION_SHAPES = {
    "evaluation/positive_counts": [1, SCORE_BINS], "evaluation/negative_counts": [1, SCORE_BINS],
    "evaluation/twice_mann_whitney": [1], "evaluation/confusion": [2, 2],
}


@pytest.mark.parametrize("scenario", ["plain", "ckks"])
def test_no_site_message_carries_per_image_labels_or_predictions(runs, scenario):
    out = runs.root / f"out-{scenario}"
    runs.first.wait_for_finding(out, scenario, seconds=400)
    replies = [json.loads(line) for line in (out / f"received-{scenario}.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in replies].count("setup") == SITES and len(replies) == SITES * (1 + 3 + 1)

    test_sizes = {len(np.load(path)["test_labels"]) for path in runs.site_files}
    per_image = test_sizes | {sum(test_sizes)}
    update = {"update/payload"} if scenario == "plain" else set()  # under CKKS the update is ciphertext
    allowed_by_kind = {"train": update, "evaluate": {"global/vector"}, "setup": set()}
    for reply in replies:
        arrays = reply["arrays"]
        evaluation = {name: entry["shape"] for name, entry in arrays.items() if name.startswith("evaluation/")}
        assert evaluation in ({}, EVALUATION_SHAPES), reply
        allowed = set(EVALUATION_SHAPES) | allowed_by_kind[reply["kind"]]
        assert set(arrays) <= allowed, reply
        lengths = [n for entry in arrays.values() for n in entry["shape"]]
        lengths += [entry["length"] for entry in reply["configs"].values() if "length" in entry]
        assert not per_image & set(lengths), f"{reply['site']} sent something of a test set's length: {reply}"
    evaluated = [r for r in replies if "evaluation/confusion" in r["arrays"]]
    assert len(evaluated) == SITES * 3, "every site evaluated the models of rounds 1 to 3, as counts"
