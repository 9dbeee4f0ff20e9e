"""The typed report reads report.json and writes it back unchanged, and refuses what is not a report."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from fedsecure.errors import ReportFormatError
from fedsecure.report import Report
from fedsecure.report.findings import (
    InversionFinding,
    MembershipFinding,
    RateAtFpr,
    ScenarioFinding,
    UtilityFinding,
    from_json,
    to_json,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPO = Path(__file__).parent.parent.parent


@pytest.fixture
def written() -> dict:
    """The committed report of a tiny audit, as json.load gives it (written by the code before the typed report)."""
    return json.loads((FIXTURES / "report-tiny.json").read_text())


def test_the_committed_report_round_trips(written):
    report = Report.from_json(written)
    assert report.to_json() == written
    assert json.dumps(report.to_json(), sort_keys=True) == json.dumps(written, sort_keys=True)  # floats untouched


def test_each_attack_is_read_as_its_kind(written):
    plain, ckks = Report.from_json(written).scenarios[:2]
    idlg, idlg_client, lira, loss, *other_seats = plain.attacks
    assert isinstance(idlg, InversionFinding) and isinstance(lira, MembershipFinding)
    assert (idlg.kind(), lira.kind(), loss.method) == ("inversion", "membership", "loss")
    assert (idlg.position, idlg_client.position, idlg_client.attacker_site) == ("server", "client", "site-1")
    assert [(a.method, a.position) for a in other_seats] == [
        ("lira", "server"), ("loss", "server"), ("lira", "client"), ("loss", "client")
    ]
    assert isinstance(lira.tpr_at_fpr["0.01"], RateAtFpr) and lira.tpr_at_fpr["0.01"].resolved is False
    assert ckks.attacks[0].status == "no_access" and ckks.attacks[0].psnr_median is None  # None stays None
    assert ckks.attacks[1].status == "ok" and ckks.attacks[1].psnr_gain_median > 10  # the other site, under CKKS


def test_a_stage_round_trips_on_its_own(written):
    for scenario in written["scenarios"]:
        assert ScenarioFinding.from_json(scenario).to_json() == scenario


def test_an_undefined_metric_is_null_and_reads_back_as_nan():
    form = to_json(UtilityFinding(auc=None, accuracy=math.nan, per_site=[]))
    assert form == {"auc": None, "accuracy": None, "per_site": [], "dice": None, "dice_per_class": None,
                    "hd95": None, "missed_structures": None, "spurious_structures": None, "examples": None}
    again = from_json(UtilityFinding, form)
    assert again.auc is None and math.isnan(again.accuracy) and to_json(again) == form


def test_ints_stay_ints_and_floats_stay_floats(written):
    altered = copy.deepcopy(written)
    altered["scenarios"][0]["cost"]["train_seconds"] = 2  # a float field given an int: read as it is
    read = Report.from_json(altered)
    assert type(read.scenarios[0].cost.train_seconds) is int and read.to_json() == altered
    assert type(read.scenarios[0].cost.bytes_up_per_round) is float


@pytest.mark.parametrize(("alter", "message"), [
    (lambda r: r.pop("baselines"), "report: missing field 'baselines'"),
    (lambda r: r["scenarios"][2]["privacy"].update(epsilon="8"),
     "report.scenarios[2].privacy.epsilon: expected a number, found the string '8'"),
    (lambda r: r["scenarios"][0]["attacks"][2]["tpr_at_fpr"]["0.01"].update(resolved=1),
     "report.scenarios[0].attacks[2].tpr_at_fpr.0.01.resolved: expected a boolean, found the number 1"),
    (lambda r: r["scenarios"][0]["attacks"][0].pop("attack"),
     "report.scenarios[0].attacks[0].attack: None is not one of"),
    (lambda r: r["scenarios"][0]["rounds"][0].update(bytes_up=1.5),
     "report.scenarios[0].rounds[0].bytes_up: expected an integer, found the number 1.5"),
    (lambda r: r["scenarios"][0].update(attacks={}), "report.scenarios[0].attacks: expected a list, found an object"),
    (lambda r: r["environment"].update(gpu="none"), "report.environment: unknown field 'gpu'"),
    (lambda r: r.update(schema_version="2.0"), "report schema 2.0 cannot be read by this fedsecure"),
])
def test_what_is_not_a_report_is_refused_with_the_field_named(written, alter, message):
    alter(written)
    with pytest.raises(ReportFormatError) as refused:
        Report.from_json(written)
    assert message in str(refused.value)
    assert not isinstance(refused.value, (KeyError, TypeError))


def test_a_field_added_after_a_report_was_written_takes_its_default(written):
    for scenario in written["scenarios"]:
        del scenario["engine"], scenario["events"]  # schema 1.1 had neither
    old = Report.from_json(written)
    assert [s.engine for s in old.scenarios] == ["in-process"] * 4 and old.scenarios[0].events == []


def test_another_minor_versions_fields_are_skipped_not_refused(written):
    # A 1.2 report carries membership's epsilon_lb (dropped in 1.3); a newer 1.x report may carry a field this
    # version does not know. Either still renders; only a report of this very version is refused for one.
    written["schema_version"] = "1.2"
    written["scenarios"][0]["attacks"][2]["epsilon_lb"] = 0.4
    written["environment"]["gpu"] = "none"
    old = Report.from_json(written)
    assert old.scenarios[0].attacks[2].auc == written["scenarios"][0]["attacks"][2]["auc"]
    assert "epsilon_lb" not in old.to_json()["scenarios"][0]["attacks"][2]


def test_reading_and_rendering_a_report_loads_no_engine():
    code = (
        "import json, sys\n"
        "from fedsecure.report import Report\n"
        "from fedsecure.report.markdown import render_markdown\n"
        f"report = Report.from_json(json.load(open({str(FIXTURES / 'report-tiny.json')!r})))\n"
        "render_markdown(report)\n"
        "engine = ('torch', 'opacus', 'tenseal', 'flwr', 'fedsecure.fl', 'fedsecure.privacy', 'fedsecure.secure',\n"
        "          'fedsecure.data', 'fedsecure.audit', 'fedsecure.flower', 'fedsecure.config')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(engine))\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
