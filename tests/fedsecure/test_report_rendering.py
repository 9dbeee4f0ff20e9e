"""report.html and report.md, rendered from a finished report.json: content, compliance, re-rendering, a browser."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from fedsecure.config.spec import ThresholdsSpec
from fedsecure.errors import OutputError
from fedsecure.report import Report
from fedsecure.report.compliance import scenario_compliance
from fedsecure.report.html import render_html
from fedsecure.report.markdown import render_markdown
from fedsecure.report.rendering import render_reports, rerender
from fedsecure.report.summary import seat_table
from fedsecure.report.verdict import judge
from tests.browser import MISSING, browse, chromium

# A finished report, committed: tests/fixtures/report-tiny.json, from a tiny audit of report-tiny.toml (plain,
# CKKS, sample-level DP, client-level DP under CKKS; iDLG and LiRA), with its two reconstruction grids under
# figures/. These tests render it; test_report_unchanged.py checks that the audit still writes it.
FIXTURES = Path(__file__).parent.parent / "fixtures"
FIGURES = {
    "fig-frontier", "fig-utility-rounds", "fig-roc", "fig-epsilon-rounds",
    "fig-inversion-plain-server", "fig-inversion-sample-dp-server",
    # The other site's seat inverts in every scenario, CKKS included: with two sites it holds the other's update.
    "fig-inversion-plain-client", "fig-inversion-ckks-client", "fig-inversion-sample-dp-client",
    "fig-inversion-client-dp-client",
}


def fixture_report() -> Report:
    return Report.from_json(json.loads((FIXTURES / "report-tiny.json").read_text()))


@pytest.fixture(scope="module")
def audited(tmp_path_factory) -> Path:
    """An audit directory holding the fixture report, rendered as `fedsecure report DIR` renders it."""
    out = tmp_path_factory.mktemp("report")
    shutil.copy(FIXTURES / "report-tiny.json", out / "report.json")
    shutil.copytree(FIXTURES / "figures", out / "figures")
    rerender(out)
    return out


def with_secret_noise(report: Report, name: str) -> Report:
    """``report`` as if scenario ``name`` had drawn its DP noise from the OS CSPRNG (secure_rng = true).

    The fixture seeds every noise so that its audit is reproducible, which makes each DP scenario a
    simulation that fails its verdict. A scenario with secret noise would have drawn other noise and so other
    numbers, but no statement these tests check depends on them; the verdict is judged again by the audit's
    own ``judge`` against the spec's thresholds. Honest for a test of the rendering, not of the audit.
    """
    thresholds = ThresholdsSpec(**{k: v for k, v in report.spec["thresholds"].items() if v is not None})
    scenarios = []
    for s in report.scenarios:
        if s.name == name:
            privacy = dataclasses.replace(
                s.privacy, secure_rng=True, simulation=False,
                warnings=[w for w in s.privacy.warnings if "secure_rng = false" not in w],
            )
            s = dataclasses.replace(s, privacy=privacy, verdict=judge(thresholds, privacy, s.attacks))
        scenarios.append(s)
    return dataclasses.replace(report, scenarios=scenarios)


def test_html_holds_every_part_of_the_report(audited):
    page = (audited / "report.html").read_text()
    assert set(re.findall(r'<figure id="([^"]+)"', page)) == FIGURES
    assert page.count('src="data:image/svg+xml;base64,') == 4 and page.count('src="data:image/png;base64,') == 6
    for section in ("summary", "figures", "cost", "attacks", "compliance", "reproducibility"):
        assert f'<section id="{section}">' in page
    for name in ("plain", "ckks", "sample-dp", "client-dp"):
        assert f'id="compliance-{name}"' in page
    # self-contained: no script, nothing fetched from anywhere
    assert "<script" not in page and not re.search(r'(src|href)="(?!data:)', page)
    report = json.loads((audited / "report.json").read_text())
    assert report["environment"]["spec_sha256"] in page and report["environment"]["data_sha256"] in page


def test_leakage_by_seat_names_each_seat_its_epsilon_and_worst_finding(audited):
    table = seat_table(fixture_report())
    rows = {(row[0], row[1]): row[2:] for row in table.rows}
    assert table.columns[3:] == ("inversion: worst gain over the prior", "membership: worst TPR at 1% FPR")
    # Under CKKS the server holds ciphertexts; the other hospital, with two sites, holds the other's update.
    assert rows["ckks", "the aggregation server"][1] == "no access"  # no update to invert; it gets the final model
    assert rows["ckks", "another participating hospital"][1].endswith("dB over prior (idlg)")
    assert rows["plain", "anyone given the final model"][1] == "does not apply"  # no update to invert
    # The formal epsilon is the one against that party: client-level DP under CKKS shields the server, not a site.
    assert rows["client-dp", "another participating hospital"][0] == "8.00 (simulation: seeded noise)"
    assert rows["client-dp", "anyone given the final model"][0].startswith("5.16")
    assert "## Leakage by seat" in (audited / "report.md").read_text()
    assert '<section id="seats">' in (audited / "report.html").read_text()


def test_compliance_says_who_sees_what_and_the_limits(tmp_path):
    report = with_secret_noise(fixture_report(), "sample-dp")
    render_reports(report, tmp_path)
    plain, ckks, sample_dp, client_dp = scenario_compliance(report)
    assert "in plaintext" in dict(plain.threat_model)["aggregation server"]
    assert "holds no decryption key" in dict(ckks.threat_model)["aggregation server"]
    assert "share of the noise" not in dict(client_dp.threat_model)["aggregation server"]  # CKKS hides it
    assert plain.guarantee[0] == "No formal privacy guarantee: no differential privacy is applied."
    assert sample_dp.guarantee[0].startswith("(") and "per training image" in sample_dp.guarantee[0]
    assert "group privacy" in sample_dp.guarantee[1]
    # Seeded noise (client-dp keeps secure_rng = false) is said first, and fails the verdict.
    assert client_dp.guarantee[0].startswith("SIMULATION, NOT A GUARANTEE")
    assert "Client-level differential privacy, per site" in client_dp.guarantee[1]
    assert any(line.startswith("Weakened:") and "secure_rng = false" in line for line in client_dp.guarantee)
    # One line per party, each with what it sees.
    for party in ("anyone given the released model", "the aggregation server", "another participating site"):
        assert sum(line.startswith(f"Against {party}, who sees") for line in client_dp.guarantee) == 1
    assert "No training image or label leaves a site" in plain.leaves_site
    assert "read that image's label" in plain.leaves_site
    assert "encrypted under CKKS" in ckks.leaves_site
    assert any("no access" in line for line in ckks.leakage)
    assert any(line.startswith("Gradient inversion") for line in plain.leakage)
    assert any("not a proof of privacy" in line for line in plain.limits)
    assert any("collude" in line for line in ckks.limits)
    assert (plain.verdict, sample_dp.verdict, client_dp.verdict) == ("FAIL", "PASS", "FAIL")
    assert plain.reasons == report.scenarios[0].verdict.reasons
    assert client_dp.reasons[0].startswith("simulation, not a guarantee")
    markdown = (tmp_path / "report.md").read_text()
    assert "## Compliance" in markdown and "### client-dp: FAIL" in markdown and "Limits of this evidence:" in markdown


def test_seeded_noise_never_shows_pass(audited):
    report = json.loads((audited / "report.json").read_text())
    simulated = report["scenarios"][3]
    assert simulated["privacy"]["simulation"] and simulated["verdict"]["pass"] is False
    assert report["scenarios"][2]["privacy"]["simulation"] and report["scenarios"][2]["verdict"]["pass"] is False
    markdown = (audited / "report.md").read_text()
    page = (audited / "report.html").read_text()
    summary_row = next(line for line in markdown.splitlines() if line.startswith("| client-dp |"))
    assert "PASS" not in summary_row and "simulation" in summary_row
    assert "- **client-dp**: FAIL" in markdown
    html_row = re.search(r"<tr>\s*<td>client-dp</td>.*?</tr>", page, re.S).group(0)
    assert "PASS" not in html_row and "simulation" in html_row
    assert re.search(r'id="compliance-client-dp">\s*<h3>client-dp: <span class="FAIL">FAIL</span>', page)


def test_every_dp_scenario_states_its_empirical_ceiling(audited):
    from attacks.auditing import one_run_ceiling

    report = json.loads((audited / "report.json").read_text())
    markdown = (audited / "report.md").read_text()
    for scenario in report["scenarios"][2:]:
        privacy = scenario["privacy"]
        canary = privacy["canary_audit"]
        # 10 canaries, 2 guesses: even all right, the bound stays far below epsilon 8.
        assert privacy["empirical_epsilon_ceiling"] == pytest.approx(
            one_run_ceiling(canary["canaries"], canary["guesses"], privacy["delta"], canary["confidence"]))
        assert privacy["empirical_epsilon_lb"] == canary["epsilon_lb"] <= privacy["empirical_epsilon_ceiling"] < 8
        stated = f"{scenario['name']}: the empirical audit (10 canaries, 2 guesses) could show at most epsilon"
        assert stated in markdown
    assert all("epsilon_lb" not in attack for s in report["scenarios"] for attack in s["attacks"])


def test_report_re_renders_the_same_files(audited, tmp_path):
    copied = tmp_path / "copy"
    shutil.copytree(audited, copied)
    (copied / "report.html").unlink()
    (copied / "report.md").unlink()
    assert sorted(p.name for p in rerender(copied)) == ["report.html", "report.md"]
    for name in ("report.html", "report.md"):
        assert (copied / name).read_text() == (audited / name).read_text()
    # What an audit renders from its Report is what `fedsecure report` renders from report.json.
    again = tmp_path / "again"
    shutil.copytree(FIXTURES / "figures", again / "figures")
    render_reports(fixture_report(), again)
    for name in ("report.html", "report.md"):
        assert (again / name).read_text() == (audited / name).read_text()


def test_reasons_from_a_report_are_escaped_in_html(audited):
    report = json.loads((audited / "report.json").read_text())
    report["scenarios"][0]["verdict"]["reasons"].append('<img src=x onerror="alert(1)">')
    altered = Report.from_json(report)
    page = render_html(altered, audited)
    assert "<img src=x" not in page and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page
    assert '<img src=x onerror="alert(1)">' in render_markdown(altered)  # Markdown carries text as it is


def test_report_refuses_what_it_cannot_render(tmp_path):
    with pytest.raises(OutputError, match="no such audit directory"):
        rerender(tmp_path / "absent")
    (tmp_path / "stages").mkdir()
    with pytest.raises(OutputError, match="the audit did not finish"):
        rerender(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(OutputError, match="not a readable JSON report"):
        rerender(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": "9.0"}))
    with pytest.raises(OutputError, match="report schema 9.0 cannot be rendered"):
        rerender(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"schema_version": "1.1", "spec": {}}))
    with pytest.raises(OutputError, match="incomplete or altered report"):
        rerender(tmp_path)
    fixture = json.loads((FIXTURES / "report-tiny.json").read_text())
    alterations = {
        "report.scenarios[1].cost.train_seconds: expected a number, found the string 'fast'":
            lambda r: r["scenarios"][1]["cost"].update(train_seconds="fast"),
        "report.scenarios[0].attacks[2].attack: 'reconstruction' is not one of inversion, membership":
            lambda r: r["scenarios"][0]["attacks"][2].update(attack="reconstruction"),
        "report.baselines.local_only: missing field 'per_site_on_test'":
            lambda r: r["baselines"]["local_only"].pop("per_site_on_test"),
        "report.scenarios[3].privacy: unknown field 'epsilon_guess'":
            lambda r: r["scenarios"][3]["privacy"].update(epsilon_guess=1.0),
    }
    for message, alter in alterations.items():
        altered = copy.deepcopy(fixture)
        alter(altered)
        (tmp_path / "report.json").write_text(json.dumps(altered))
        with pytest.raises(OutputError, match=re.escape(f"incomplete or altered report ({message}")):
            rerender(tmp_path)
    assert not (tmp_path / "report.html").exists()


def _chromium() -> str:
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(MISSING)  # CI installs it: a skip there would hide a test that never ran
        pytest.skip(MISSING)
    return found


# Run by the browser on a copy of the page: does every figure's image decode to a non-empty picture?
FIGURE_PROBE = """<script>
window.addEventListener("load", () => {
  const figures = {};
  for (const figure of document.querySelectorAll("figure")) {
    const image = figure.querySelector("img");
    figures[figure.id] = image !== null && image.complete && image.naturalWidth > 0 && image.naturalHeight > 0;
  }
  console.log("FIGURES " + JSON.stringify(figures));
});
</script>"""


def test_html_report_renders_in_headless_chromium(audited, tmp_path):
    chromium = _chromium()
    screenshot = tmp_path / "report.png"
    loaded = browse(chromium, audited / "report.html", f"--screenshot={screenshot}", "--window-size=1280,4000")
    assert loaded.returncode == 0, loaded.stderr
    console = [line for line in loaded.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # the page itself logs nothing: no error, no warning
    assert screenshot.stat().st_size > 50_000  # a rendered page, not a blank one
    print(f"screenshot: {screenshot}")

    decoded = probe_page(chromium, audited / "report.html", FIGURE_PROBE, "FIGURES", tmp_path)
    assert decoded == dict.fromkeys(FIGURES, True)


def probe_page(chromium: str, page: Path, script: str, tag: str, tmp_path: Path) -> dict:
    """Run ``script`` in the browser on a copy of ``page``; what it logged after ``tag``, as JSON."""
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    probed = browse(chromium, probe, "--dump-dom")
    messages = [line for line in probed.stderr.splitlines() if ":CONSOLE" in line]
    assert len(messages) == 1 and f"{tag} " in messages[0], probed.stderr
    found: dict = json.loads(messages[0].split(f"{tag} ", 1)[1].rsplit('", source:', 1)[0])
    return found


def test_a_report_cannot_embed_files_from_outside_its_directory(audited, tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes((audited / "figures" / "inversion-plain-server.png").read_bytes())
    report = json.loads((audited / "report.json").read_text())
    report["scenarios"][0]["attacks"][0]["figure"] = str(Path("..") / ".." / outside)
    page = render_html(Report.from_json(report), audited)
    assert page.count('src="data:image/png;base64,') == 5  # the other five grids
    assert page.count("was not found beside report.json") == 1


# Run by the browser on the sweep's page: the frontier's SVG, parsed as the browser reads it. Each curve's
# vertices (matplotlib draws a line as one path "M x y L x y ..."), and whether the reference lines are there.
CURVE_PROBE = """<script>
window.addEventListener("load", () => {
  const image = document.querySelector("figure#fig-frontier img");
  const svg = new DOMParser().parseFromString(atob(image.src.split(",")[1]), "image/svg+xml");
  const vertices = (id) => {
    const path = svg.querySelector(`g[id="${id}"] path`);
    return path === null ? 0 : (path.getAttribute("d").match(/[ML]/g) || []).length;
  };
  const found = {decoded: image.complete && image.naturalWidth > 0};
  for (const id of ["curve-sample", "curve-client", "curve-sample-leakage", "curve-client-leakage",
                    "baseline-centralized", "baseline-local-only", "reference-federated"]) {
    found[id] = vertices(id);
  }
  console.log("CURVES " + JSON.stringify(found));
});
</script>"""


def test_an_epsilon_sweep_draws_one_frontier_curve_per_dp_level_with_the_baselines_in_chromium(tmp_path):
    """report-sweep.json: a real audit of report-sweep.toml (epsilon 1 to 16 at both DP levels, plain beside)."""
    chromium = _chromium()
    shutil.copy(FIXTURES / "report-sweep.json", tmp_path / "report.json")
    rerender(tmp_path)
    report = Report.from_json(json.loads((tmp_path / "report.json").read_text()))
    names = [s.name for s in report.scenarios]
    assert names == ["plain", *(f"sample-dp-eps{e}" for e in (1, 2, 4, 8, 16)),
                     *(f"client-dp-eps{e}" for e in (1, 2, 4, 8, 16))]
    found = probe_page(chromium, tmp_path / "report.html", CURVE_PROBE, "CURVES", tmp_path)
    assert found["decoded"]
    # Five epsilons per level: five vertices per curve, in both the utility and the leakage panel.
    assert {k: found[k] for k in ("curve-sample", "curve-client", "curve-sample-leakage", "curve-client-leakage")} \
        == dict.fromkeys(("curve-sample", "curve-client", "curve-sample-leakage", "curve-client-leakage"), 5)
    # Horizontal reference lines: two vertices each.
    assert {k: found[k] for k in ("baseline-centralized", "baseline-local-only", "reference-federated")} \
        == dict.fromkeys(("baseline-centralized", "baseline-local-only", "reference-federated"), 2)
