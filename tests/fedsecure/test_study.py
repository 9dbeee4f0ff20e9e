"""The survey's study: six training methods on every site's test share, over seeds, the findings tested."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats

from fedsecure.audit import run_audit
from fedsecure.audit.study import paired_test, t_interval
from fedsecure.config.spec import parse_spec
from fedsecure.data import FederatedData, SiteData, Split
from fedsecure.fl.evaluation import predict
from fedsecure.fl.study import STUDY_METHODS, StudyRun
from fedsecure.fl.training import LocalTraining
from fedsecure.models import build_model
from fedsecure.report import Report
from fedsecure.report.study_finding import StudyMethodFinding, StudySiteValue

STUDY = """
name = "study-tiny"
seed = 1
[data]
source = "synthetic"
sites = 3
partition = "iid"
train_samples = 60
val_samples = 6
test_samples = 30
image_size = 16
[federation]
rounds = 2
batch_size = 8
[[scenario]]
name = "plain"
[study]
seeds = 2
"""


def test_a_study_reports_every_method_per_site_with_intervals_and_the_findings_tested(tmp_path):
    report = json.loads(json.dumps(run_audit(parse_spec(STUDY, "study.toml"), tmp_path / "out", device="cpu")))
    study = report["study"]
    assert study["seeds"] == [1, 2] and study["metric"] == "auc"
    assert [m["name"] for m in study["methods"]] == ["single", "cross", "mix", "fedavg", "fedsgd", "fedprox"]
    for method in study["methods"]:
        assert len(method["per_seed"]) == 2 and [s["site"] for s in method["per_site"]] == ["site-0", "site-1",
                                                                                           "site-2"]
        defined = [v for v in method["per_seed"] if v is not None]
        assert method["mean"] == pytest.approx(sum(defined) / len(defined))
        low, high = method["interval"]
        assert 0 <= low <= method["mean"] <= high <= 1
    assert [(c["better"], c["worse"]) for c in study["comparisons"]] == [
        ("mix", "fedavg"), ("fedavg", "single"), ("fedprox", "single"), ("fedavg", "cross"), ("single", "cross"),
        ("fedavg", "fedsgd"),
    ]
    assert all(c["test"].startswith("Wilcoxon signed-rank") and c["n_pairs"] == 6 for c in study["comparisons"])
    # The report reads back unchanged and renders the table, the findings and the figure.
    assert Report.from_json(report).to_json() == report
    page = (tmp_path / "out" / "report.html").read_text()
    assert '<section id="study">' in page and 'id="fig-study"' in page and "fedavg above fedsgd" in page
    assert "| fedprox |" in (tmp_path / "out" / "report.md").read_text()


def tiny_sites(seed=0) -> FederatedData:
    rng = np.random.default_rng(seed)
    sites = []
    for k in range(2):
        train = Split(rng.random((8, 1, 8, 8), dtype=np.float32), (np.arange(8) % 2).astype(np.int64))
        test = Split(rng.random((4, 1, 8, 8), dtype=np.float32), np.array([0, 1, 0, 1]))
        sites.append(SiteData(f"site-{k}", train, test))
    return FederatedData(sites=sites, n_classes=2, in_channels=1, image_size=(8, 8))


def test_cross_judges_each_site_by_the_other_sites_models_and_single_by_its_own():
    data = tiny_sites()
    run = StudyRun(data=data, make_model=lambda seed: build_model("cnn", 1, 2, (8, 8), seed),
                   training=LocalTraining(batch_size=4, lr=0.1), rounds=2, seed=0, device=torch.device("cpu"),
                   mu=0.01)
    single = STUDY_METHODS.get("single")(run)
    cross = STUDY_METHODS.get("cross")(run)
    models = run.shared["site"]  # trained once, judged by both
    for k, other in ((0, 1), (1, 0)):
        test_images, test_labels = data.sites[k].test.tensors()
        torch.testing.assert_close(single.per_site[k][0], predict(models[k], test_images, 64))
        torch.testing.assert_close(cross.per_site[k][0], predict(models[other], test_images, 64))
        assert torch.equal(cross.per_site[k][1], test_labels)


def test_the_t_interval_by_hand():
    low, high = t_interval([0.7, 0.8, 0.9], 0.95)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 dof) x sd / sqrt(n)
    assert (low, high) == pytest.approx((0.8 - half, 0.8 + half))
    assert t_interval([0.5], 0.95) is None


def test_the_paired_test_by_hand():
    """Differences 0.1, 0.2, -0.05, 0.3: ranks 2, 3, 1, 4; W- = 1; exact two-sided p = 2 x P(W <= 1) = 2 x 2/16."""
    def method(name, values):
        return StudyMethodFinding(name, "", None, None, [], [StudySiteValue("a", None, values[:2]),
                                                              StudySiteValue("b", None, values[2:])], 0.0)

    comparison = paired_test(method("fedavg", [0.9, 0.8, 0.65, 0.9]), method("single", [0.8, 0.6, 0.7, 0.6]))
    assert comparison.n_pairs == 4 and comparison.holds
    assert comparison.mean_difference == pytest.approx(0.1375)
    assert comparison.statistic == 1.0 and comparison.p_value == pytest.approx(0.25)
    assert comparison.p_value == pytest.approx(stats.wilcoxon([0.1, 0.2, -0.05, 0.3]).pvalue)
    undefined = paired_test(method("fedavg", [0.9, None, None, None]), method("single", [None, 0.6, 0.7, 0.6]))
    assert undefined.n_pairs == 0 and undefined.holds is None and undefined.p_value is None
