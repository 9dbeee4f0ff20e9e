"""The tiny audit's report equals the one committed: no change moves a number unannounced.

``tests/fixtures/report-tiny.json`` was first written by the code before the
restructure of issue 15 (commit 8f8fea3), and rewritten when issue 18 added
the attacks from every seat (its earlier findings compared equal, float for
float; the new seats' findings and the verdicts they move were added); issue
19 added the image-file options to its ``spec`` section and nothing else; issue 20
the task (``spec.data.task``, ``metric``) and the segmentation fields, null in
a classification report, and nothing else; issue 21 schema 1.8's ``study`` (null
without a ``[study]``) and nothing else; issue 22 schema 1.9's scenario
``transport`` (null in-process), each spec scenario's ``secagg`` (null), and
the CKKS server seat's wording (it names CKKS where it said "secure
aggregation", now that SecAgg+ is one whose server holds the global models),
and nothing else; from
``tests/fixtures/report-tiny.toml``: plain,
CKKS, sample-level DP, client-level DP under CKKS, iDLG inversion and LiRA
membership, every noise seeded so the run is reproducible. Timings and CKKS
ciphertext sizes (TenSEAL's serialisation varies by a few bytes from run to
run) are left out of the comparison; everything else must be equal, float for
float, on one torch thread as the tests run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fedsecure.audit import run_audit
from fedsecure.config.spec import parse_spec

FIXTURES = Path(__file__).parent.parent / "fixtures"
UNSTABLE = re.compile(r"seconds|bytes")  # timings, and CKKS ciphertext sizes


def comparable(value, key: str = ""):
    """``value`` without the unstable fields."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items() if not UNSTABLE.search(k)}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def test_the_tiny_audit_gives_the_committed_report(tmp_path):
    spec = parse_spec((FIXTURES / "report-tiny.toml").read_text(), origin="test")
    report = json.loads(json.dumps(run_audit(spec, tmp_path / "run", device="cpu")))
    before = json.loads((FIXTURES / "report-tiny.json").read_text())
    assert comparable(report["environment"]) == comparable(before["environment"])
    assert comparable(report["baselines"]) == comparable(before["baselines"])
    for now, then in zip(report["scenarios"], before["scenarios"], strict=True):
        assert comparable(now) == comparable(then), now["name"]
    assert comparable(report) == comparable(before)


def test_the_comparison_sees_a_changed_number():
    before = json.loads((FIXTURES / "report-tiny.json").read_text())
    altered = json.loads(json.dumps(before))
    altered["scenarios"][0]["utility"]["auc"] += 1e-12
    assert comparable(altered) != comparable(before)
    altered = json.loads(json.dumps(before))
    altered["scenarios"][1]["cost"]["bytes_up_per_round"] += 7  # CKKS byte jitter is ignored
    assert comparable(altered) == comparable(before)
