"""The mechanism audit: correct DP code passes it, deliberately broken DP code (mutants, patched in here) fails it.

Each DP scenario's own privacy pipeline is run many times without and with a
canary (``PrivacyMechanism.canary_trials``) and the noise it really adds is
bounded (``fedsecure.audit.mechanism``). These tests check the canary trials'
statistics against what the accountant assumes, the audit's verdict on the
real code and on mutants (never reachable from a spec: they live only in this
file, applied with ``monkeypatch``), canary clients over a real run, the
spec's options, and the finding's way into the report and the verdict.

The spec is tiny (4 sites of 50 synthetic images, 2 rounds) and its noise
seeded (``secure_rng = false``), so that every audit is reproducible; the
trials are few (20000 client level, 4000 sample level): enough for the
margins asserted, in seconds.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from fedsecure.audit.canary_clients import audit_canary_clients
from fedsecure.audit.mechanism import audit_mechanism
from fedsecure.config.spec import AuditSpec, MechanismSpec, ThresholdsSpec, parse_spec
from fedsecure.data.federated import FederatedData
from fedsecure.errors import SpecError
from fedsecure.fl import Federation, LocalTraining
from fedsecure.fl.privacy_hooks import FederationFacts
from fedsecure.models import build_model
from fedsecure.privacy import ClientLevelDP, SampleLevelDP, calibrate_noise, client_level
from fedsecure.report import Report
from fedsecure.report.compliance import scenario_compliance
from fedsecure.report.html import render_html
from fedsecure.report.markdown import render_markdown
from fedsecure.report.mechanism_finding import MechanismAuditFinding
from fedsecure.report.verdict import judge

CPU = torch.device("cpu")
CLIENT_TRIALS = 20_000
SAMPLE_TRIALS = 4_000
FIXTURES = Path(__file__).parent.parent / "fixtures"

# 4 sites of 50 images, batches of 25: DP-SGD samples at rate 1/2, two steps a round.
MECHANISM_DATA = """
[data]
source = "synthetic"
sites = 4
partition = "iid"
train_samples = 200
val_samples = 20
test_samples = 40
image_size = 16

[model]
name = "lenet-dlg"

[federation]
rounds = 2
batch_size = 25
"""

DP = "epsilon = 8.0, delta = 1e-3"
DP_SCENARIOS = f"""
[[scenario]]
name = "plain"

[[scenario]]
name = "client-dp"
dp = {{ level = "client", {DP}, clip = 0.5, placement = "distributed" }}

[[scenario]]
name = "client-dp-ckks"
protocol = "ckks"
dp = {{ level = "client", {DP}, clip = 0.5, placement = "distributed" }}

[[scenario]]
name = "client-dp-central"
dp = {{ level = "client", {DP}, clip = 0.5, placement = "central" }}

[[scenario]]
name = "client-dp-adaptive"
protocol = "ckks"
dp = {{ level = "client", {DP}, clip = 0.5, placement = "distributed", adaptive_quantile = 0.5 }}

[[scenario]]
name = "sample-dp"
dp = {{ level = "sample", {DP}, clip = 1.0 }}
"""


def mechanism_spec(attacks: str = f"mechanism = {{ trials = {CLIENT_TRIALS}, seed = 5 }}") -> str:
    return '\nname = "mechanism"\nseed = 3\n' + MECHANISM_DATA + DP_SCENARIOS + f"\n[attacks]\n{attacks}\n"


@pytest.fixture(scope="module")
def spec() -> AuditSpec:
    return parse_spec(mechanism_spec(), "<test>").spec


@pytest.fixture(scope="module")
def data(spec) -> FederatedData:
    return spec.data.federated(spec.seed)


def with_mechanism(spec: AuditSpec, **options) -> AuditSpec:
    return spec.model_copy(update={"attacks": spec.attacks.model_copy(update={"mechanism": MechanismSpec(**options)})})


def audit(spec: AuditSpec, name: str, data: FederatedData, build_federation=None) -> MechanismAuditFinding:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seeded noise, distributed noise without CKKS: said by the scenario's run
        finding = audit_mechanism(spec, spec.scenario_named(name), data, build_federation)
    assert finding is not None
    return finding


def sample_audit_spec(spec: AuditSpec, **options) -> AuditSpec:
    return with_mechanism(spec, trials=SAMPLE_TRIALS, seed=5, **options)


def federation_builder(spec: AuditSpec, name: str, built: list[Federation] | None = None):
    """The scenario's federation on given data, as the audit runner builds it (keyword overrides win)."""
    scenario = spec.scenario_named(name)

    def build(on: FederatedData, **overrides) -> Federation:
        height, width = on.image_size
        settings = dict(
            training=scenario.local_training(spec.federation, spec.data.task), rounds=spec.federation.rounds,
            protocol=scenario.protocol_instance(), clients_per_round=spec.federation.clients_per_round,
            seed=spec.seed, device=CPU, privacy=scenario.dp.mechanism() if scenario.dp is not None else None,
        )
        model = build_model(spec.model.name, on.in_channels, on.n_classes, (height, width), spec.seed)
        federation = Federation(on, model, spec.federation.strategy_instance(), **{**settings, **overrides})
        if built is not None:
            built.append(federation)
        return federation

    return build


def calibrated(mechanism, *, updates_hidden: bool, sites: int = 4, site_size: int = 50):
    """``mechanism`` calibrated for ``sites`` sites of ``site_size`` images, 2 rounds, batches of 25."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism.calibrate(FederationFacts(
            [site_size] * sites, 2, LocalTraining(batch_size=25), None, 0, CPU, updates_hidden=updates_hidden
        ))
    return mechanism


# --- mutants: broken DP code, patched in for one test ----------------------------------------------------------


# The mutants are benchmarks/privacy_mutants.py's (one definition of each), applied through monkeypatch. Loaded
# by path: an installed dependency ships a top-level package named "benchmarks".
_MUTANTS = importlib.util.spec_from_file_location(
    "privacy_mutants", Path(__file__).parent.parent.parent / "benchmarks" / "privacy_mutants.py"
)
assert _MUTANTS is not None and _MUTANTS.loader is not None
privacy_mutants = importlib.util.module_from_spec(_MUTANTS)
_MUTANTS.loader.exec_module(privacy_mutants)


def half_noise_shares(monkeypatch) -> None:
    """Client level: every noise share drawn at half its standard deviation."""
    privacy_mutants.client_noise_scaled(0.5)(monkeypatch.setattr)


def noise_reused_across_rounds(monkeypatch) -> None:
    """Client level: the first noise drawn of each shape is sent again every time."""
    privacy_mutants.noise_reused(client_level)(monkeypatch.setattr)


def per_sample_clipping_skipped(monkeypatch) -> None:
    """Sample level: Opacus's per-sample gradients summed without clipping."""
    privacy_mutants.sample_clipping_skipped(monkeypatch.setattr)


# --- client level ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kinds"),
    [("client-dp", 1), ("client-dp-ckks", 1), ("client-dp-central", 1), ("client-dp-adaptive", 2)],
)
def test_client_level_dp_passes_the_mechanism_audit_and_the_audit_is_tight(spec, data, name, kinds):
    finding = audit(spec, name, data)
    assert finding.level == "client" and finding.site == 0 and finding.confidence == 0.95
    assert finding.consistent and finding.verdict == "consistent" and finding.failure() is None
    assert finding.canary_clients is None  # not asked for
    assert len(finding.checks) == kinds
    for check in finding.checks:
        assert check.trials == CLIENT_TRIALS
        assert check.negatives + check.positives == CLIENT_TRIALS  # the judging halves of both worlds
        assert check.confidence == pytest.approx(1 - 0.05 / kinds)  # Bonferroni across the canaries
        assert check.sample_rate == 1.0 and check.steps_per_round == 1
        assert check.consistent
        assert 0 < check.per_round_lb <= check.per_round_estimate <= check.per_round_ub
        assert check.per_round_lb <= check.per_round_claimed < check.per_round_ceiling
        assert check.whole_run_lb <= check.whole_run_claimed < check.whole_run_ceiling
        assert check.whole_run_claimed > check.per_round_claimed  # two rounds compose
        assert 1.0 <= check.tightness <= 1.3
        assert check.noise_multiplier_bound >= check.claimed_noise_multiplier
    if kinds == 2:
        above, under = finding.checks
        assert "norm 3 x the clip" in above.canary and "norm 0.999 x the clip" in under.canary


def test_client_level_observer_follows_the_protocol(spec, data):
    names = ("client-dp", "client-dp-ckks", "client-dp-central")
    observers = {name: audit(spec, name, data).checks[0] for name in names}
    assert "site's own noised update" in observers["client-dp"].observer
    assert "secure aggregation" in observers["client-dp-ckks"].observer
    assert "the server's noise" in observers["client-dp-central"].observer
    # Without secure aggregation the server faces one share of the 4 sites' noise: half the multiplier.
    assert observers["client-dp"].claimed_noise_multiplier == pytest.approx(
        observers["client-dp-ckks"].claimed_noise_multiplier / 2)
    assert observers["client-dp"].per_round_claimed > observers["client-dp-ckks"].per_round_claimed


def test_mechanism_audit_is_reproducible_from_its_seed(spec, data):
    first, again = audit(spec, "client-dp-ckks", data), audit(spec, "client-dp-ckks", data)
    assert first.checks == again.checks
    other = audit(with_mechanism(spec, trials=CLIENT_TRIALS, seed=6), "client-dp-ckks", data)
    assert other.checks[0].per_round_lb != first.checks[0].per_round_lb


def test_scenario_without_dp_or_without_mechanism_option_is_not_audited(spec, data):
    assert audit_mechanism(spec, spec.scenario_named("plain"), data) is None
    unasked = spec.model_copy(update={"attacks": spec.attacks.model_copy(update={"mechanism": None})})
    assert audit_mechanism(unasked, unasked.scenario_named("client-dp"), data) is None


@pytest.mark.parametrize("name", ["client-dp", "client-dp-ckks", "client-dp-adaptive"])
def test_noise_shares_at_half_their_std_are_caught(spec, data, monkeypatch, name):
    half_noise_shares(monkeypatch)
    finding = audit(spec, name, data)
    assert not finding.consistent and finding.verdict == "inconsistent"
    broken = finding.checks[0]
    assert not broken.consistent
    assert broken.per_round_lb > broken.per_round_claimed and broken.whole_run_lb > broken.whole_run_claimed
    # Half the noise multiplier: the bound sits near half the claimed one, well under the claim.
    assert broken.noise_multiplier_bound < 0.6 * broken.claimed_noise_multiplier
    failure = finding.failure()
    assert failure is not None and "a bug in the DP implementation is likely" in failure
    assert f"{broken.per_round_lb:.3g}" in failure and f"{broken.per_round_claimed:.3g}" in failure
    assert finding.statement().startswith("Does the privacy code do what it claims? Inconsistent")


@pytest.mark.parametrize("name", ["client-dp", "client-dp-ckks", "client-dp-adaptive"])
def test_noise_reused_across_rounds_is_caught_by_the_spread_across_steps(spec, data, monkeypatch, name):
    noise_reused_across_rounds(monkeypatch)
    finding = audit(spec, name, data)
    assert not finding.consistent
    for check in finding.checks:
        assert check.statistic == "spread across steps"
        assert check.per_round_lb > check.per_round_claimed
        # Round 2 repeats round 1's noise: the spread is the canary itself, every trial told apart.
        assert check.false_positives == 0 and check.false_negatives == 0
        assert check.per_round_lb == pytest.approx(check.per_round_ceiling)
    assert "a bug in the DP implementation is likely" in finding.failure()


# --- sample level ----------------------------------------------------------------------------------------------


def test_sample_level_dp_passes_the_mechanism_audit(spec, data):
    # canary_clients apply to client-level DP only: a sample-level audit runs none (and needs no federation).
    finding = audit(sample_audit_spec(spec, canary_clients=10), "sample-dp", data)
    assert finding.level == "sample" and finding.consistent and finding.canary_clients is None
    (check,) = finding.checks
    expected = calibrate_noise(8.0, 1e-3, 0.5, 2 * 2, "rdp")  # rate 25/50, 2 steps a round, 2 rounds
    assert check.claimed_noise_multiplier == pytest.approx(expected)
    assert check.sample_rate == 0.5 and check.steps_per_round == 2 and check.trials == SAMPLE_TRIALS
    assert 0 < check.per_round_lb <= check.per_round_claimed < check.per_round_ceiling
    assert check.whole_run_lb <= check.whole_run_claimed < check.whole_run_ceiling
    assert check.tightness >= 1.0
    assert check.per_round_lb > 0.5 * check.per_round_claimed  # the audit shows most of what is claimed


def test_per_sample_clipping_skipped_is_caught(spec, data, monkeypatch):
    per_sample_clipping_skipped(monkeypatch)
    finding = audit(sample_audit_spec(spec), "sample-dp", data)
    assert not finding.consistent
    (check,) = finding.checks
    assert check.per_round_lb > check.per_round_claimed and check.whole_run_lb > check.whole_run_claimed
    assert "a bug in the DP implementation is likely" in finding.failure()
    assert "sample-level" in finding.failure()


# --- the canary trials' statistics ---------------------------------------------------------------------------


def assert_normal_sample(values: np.ndarray, mean: float, std: float) -> None:
    """``values`` look like N(mean, std^2) draws: mean and std within 5 standard errors."""
    n = values.size
    assert abs(values.mean() - mean) < 5 * std / math.sqrt(n), (values.mean(), mean)
    assert abs(values.std() - std) < 5 * std / math.sqrt(2 * n), (values.std(), std)


def assert_uncorrelated(a: np.ndarray, b: np.ndarray) -> None:
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(len(a))


@pytest.mark.parametrize("secure_rng", [False, True])
def test_sample_level_canary_trials_are_in_sensitivity_units(secure_rng):
    mechanism = calibrated(SampleLevelDP(epsilon=8.0, delta=1e-3, clip=1.0, secure_rng=secure_rng),
                           updates_hidden=False)
    (trials,) = mechanism.canary_trials(50, SAMPLE_TRIALS, seed=5)
    z = calibrate_noise(8.0, 1e-3, 0.5, 4, "rdp")
    assert trials.noise_multiplier == pytest.approx(z) and trials.noise_std == pytest.approx([z])
    assert trials.sample_rate == 0.5 and trials.steps_per_round == 2
    assert trials.whole_run == [(pytest.approx(z), 0.5, 4)]
    assert trials.without.shape == trials.with_canary.shape == (SAMPLE_TRIALS, 2, 1)
    assert (trials.signal == 1.0).all() and trials.signal.shape == (2, 1)
    # Without the canary: the noise alone, at the claimed multiplier, independent across steps.
    assert_normal_sample(trials.without, 0.0, z)
    assert_uncorrelated(trials.without[:, 0, 0], trials.without[:, 1, 0])
    # With it: in each step with probability 1/2 (Poisson sampling), clipped from 3 to a shift of 1.
    q = trials.sample_rate
    assert abs(trials.with_canary.mean() - q) < 5 * math.sqrt((q * (1 - q) + z**2) / trials.with_canary.size)
    assert trials.with_canary.std() == pytest.approx(math.sqrt(q * (1 - q) + z**2), rel=0.05)


@pytest.mark.parametrize("secure_rng", [False, True])
@pytest.mark.parametrize("updates_hidden", [False, True])
def test_client_level_canary_trials_are_in_sensitivity_units(updates_hidden, secure_rng):
    mechanism = calibrated(
        ClientLevelDP(epsilon=8.0, delta=1e-3, clip=0.5, placement="distributed", secure_rng=secure_rng),
        updates_hidden=updates_hidden,
    )
    (trials,) = mechanism.canary_trials(50, CLIENT_TRIALS, seed=5)
    # The server sees the sum of 4 shares under secure aggregation, else one share: 1/4 of the noise variance.
    shares = 1.0 if updates_hidden else 0.5
    z = mechanism.noise_multiplier * shares
    assert trials.noise_multiplier == pytest.approx(z) and trials.noise_std == pytest.approx([z])
    assert trials.sample_rate == 1.0 and trials.steps_per_round == 1 and trials.whole_run == [(z, 1.0, 2)]
    assert trials.without.shape == trials.with_canary.shape == (CLIENT_TRIALS, 2, 1)
    np.testing.assert_array_equal(trials.signal, [[1.0], [0.0]])
    assert_normal_sample(trials.without[:, 0, 0], 0.0, z)
    assert_normal_sample(trials.without[:, 1, 0], 0.0, z)
    assert_normal_sample(trials.with_canary[:, 0, 0], 1.0, z)  # clipped from 3 clips to 1
    assert_normal_sample(trials.with_canary[:, 1, 0], 0.0, z)  # round 2: zero in both worlds
    assert_uncorrelated(trials.with_canary[:, 0, 0], trials.with_canary[:, 1, 0])


@pytest.mark.parametrize("updates_hidden", [False, True])
def test_adaptive_clipping_canary_trials_shift_the_count_by_one_sensitivity(updates_hidden):
    mechanism = calibrated(
        ClientLevelDP(epsilon=8.0, delta=1e-3, clip=0.5, placement="distributed", adaptive_quantile=0.5),
        updates_hidden=updates_hidden,
    )
    above, under = mechanism.canary_trials(50, CLIENT_TRIALS, seed=5)
    shares = 1.0 if updates_hidden else 0.5
    update_std, count_std = mechanism.update_noise_multiplier * shares, mechanism.count_stddev / 0.5 * shares
    assert mechanism.update_noise_multiplier > mechanism.noise_multiplier  # the count's noise costs the update some
    for trials, update_shift in ((above, 1.0), (under, 0.999)):
        assert trials.noise_std == pytest.approx([update_std, count_std])
        assert trials.noise_multiplier == pytest.approx(mechanism.noise_multiplier * shares)
        assert trials.with_canary.shape == (CLIENT_TRIALS, 2, 2)
        np.testing.assert_allclose(trials.signal, [[update_shift, 1.0], [0.0, 0.0]])
        for world, shift in ((trials.without, (0.0, 0.0)), (trials.with_canary, (update_shift, 1.0))):
            assert_normal_sample(world[:, 0, 0], shift[0], update_std)
            assert_normal_sample(world[:, 0, 1], shift[1], count_std)  # bit -1/2 above the clip, +1/2 under it
            assert_normal_sample(world[:, 1, 0], 0.0, update_std)
            assert_normal_sample(world[:, 1, 1], 0.0, count_std)
            assert_uncorrelated(world[:, 0, 0], world[:, 0, 1])
            assert_uncorrelated(world[:, 0, 1], world[:, 1, 1])


def test_seeded_canary_trials_repeat_and_secure_ones_do_not():
    def trials(secure_rng: bool, seed: int):
        mechanism = calibrated(
            ClientLevelDP(epsilon=8.0, delta=1e-3, clip=0.5, placement="distributed", secure_rng=secure_rng),
            updates_hidden=True,
        )
        return mechanism.canary_trials(50, 2000, seed=seed)[0]

    np.testing.assert_array_equal(trials(False, 5).with_canary, trials(False, 5).with_canary)
    assert not np.array_equal(trials(False, 5).with_canary, trials(False, 6).with_canary)
    # The OS CSPRNG's noise does not follow the seed.
    assert not np.array_equal(trials(True, 5).with_canary, trials(True, 5).with_canary)


# --- canary clients --------------------------------------------------------------------------------------------


def test_canary_clients_show_a_federation_without_dp_leaking(spec, data):
    found = audit_canary_clients(data, federation_builder(spec, "plain"), clients=10, unseen=200, norm=0.5,
                                 delta=1e-3, confidence=0.95, seed=3)
    assert found.clients == 10 and found.unseen == 200 and found.rounds == 2
    assert found.accountant_epsilon is None and found.within  # nothing claimed, nothing contradicted
    assert found.low > 5 and found.low <= found.epsilon <= found.high
    assert found.inserted_mean > found.unseen_mean + 10 * found.unseen_std


def test_canary_clients_under_client_level_dp_are_measured_against_the_public(spec, data):
    built: list[Federation] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = audit_canary_clients(data, federation_builder(spec, "client-dp-ckks", built), clients=10,
                                     unseen=200, norm=0.5, delta=1e-3, confidence=0.95, seed=3)
    assert math.isfinite(found.epsilon) and found.low <= found.epsilon <= found.high
    assert found.rounds == 2 and found.dimension == built[-1].state.numel
    run = built[-1]  # the federation the canary clients took part in
    assert len(run.canaries) == 10
    public = next(g for g in run.privacy.guarantees() if g.party == "public")
    assert found.accountant_epsilon == pytest.approx(public.epsilon) and public.epsilon <= 8.0
    assert found.within


def test_mechanism_audit_runs_canary_clients_when_asked(spec, data):
    options = with_mechanism(spec, trials=CLIENT_TRIALS, seed=5, canary_clients=10, unseen_canaries=200)
    with pytest.raises(ValueError, match="build_federation"):
        audit(options, "client-dp-ckks", data)
    finding = audit(options, "client-dp-ckks", data, federation_builder(options, "client-dp-ckks"))
    clients = finding.canary_clients
    assert clients is not None and clients.clients == 10 and clients.unseen == 200 and clients.norm == 0.5
    assert clients.accountant_epsilon is not None and clients.rounds == 2
    assert clients.within and finding.consistent
    assert clients.summary() in finding.statement()


# --- the spec --------------------------------------------------------------------------------------------------


def test_mechanism_options_are_read_from_the_spec():
    spec = parse_spec(mechanism_spec(
        "mechanism = { trials = 1000, site = 3, confidence = 0.9, canary_clients = 5 }"), "<test>").spec
    options = spec.attacks.mechanism
    assert (options.trials, options.site, options.confidence, options.seed) == (1000, 3, 0.9, None)
    assert (options.canary_clients, options.unseen_canaries) == (5, 1000)


@pytest.mark.parametrize(("options", "message"), [
    ("site = 9", r"attacks\.mechanism\.site \(9\) must be a site index below data\.sites \(4\)"),
    ("site = 4", r"attacks\.mechanism\.site \(4\)"),
    ("trials = 10", r"attacks\.mechanism\.trials: .*1000"),
    ("confidence = 1.0", r"attacks\.mechanism\.confidence"),
    ("unseen_canaries = 1", r"attacks\.mechanism\.unseen_canaries"),
    ("seeds = 3", r"attacks\.mechanism\.seeds: unknown field"),
])
def test_bad_mechanism_options_are_refused(options, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(mechanism_spec(f"mechanism = {{ {options} }}"), "<test>")


# --- the report ------------------------------------------------------------------------------------------------


def fixture_report() -> Report:
    return Report.from_json(json.loads((FIXTURES / "report-tiny.json").read_text()))


def with_mechanism_audit(report: Report, name: str, finding: MechanismAuditFinding) -> Report:
    scenarios = [
        dataclasses.replace(s, privacy=dataclasses.replace(s.privacy, mechanism_audit=finding)) if s.name == name
        else s
        for s in report.scenarios
    ]
    return dataclasses.replace(report, scenarios=scenarios)


def thresholds_of(report: Report) -> ThresholdsSpec:
    return ThresholdsSpec(**{k: v for k, v in report.spec["thresholds"].items() if v is not None})


def test_report_without_mechanism_audit_has_no_such_section(tmp_path):
    report = fixture_report()
    assert all(s.privacy.mechanism_audit is None for s in report.scenarios)
    assert "Does the privacy code do what it claims?" not in render_markdown(report)
    assert "Does the privacy code do what it claims?" not in render_html(report, tmp_path)


def test_consistent_mechanism_audit_in_the_report(spec, data, tmp_path):
    finding = audit(spec, "client-dp-ckks", data)
    report = with_mechanism_audit(fixture_report(), "client-dp", finding)
    check = finding.checks[0]

    markdown = render_markdown(report)
    assert "## Does the privacy code do what it claims?" in markdown
    rows = [line for line in markdown.splitlines() if line.startswith(f"| client-dp | {check.canary} |")]
    assert len(rows) == 1 and rows[0].endswith("| consistent |")
    assert finding.statement() in markdown  # the compliance section
    html = render_html(report, tmp_path)
    assert "<h2>Does the privacy code do what it claims?</h2>" in html
    assert '<td class="num">consistent</td>' in html

    # report.json round-trips the finding unchanged.
    written = json.loads(json.dumps(report.to_json(), allow_nan=False))
    again = Report.from_json(written)
    assert again == report and again.to_json() == written
    assert next(s for s in again.scenarios if s.name == "client-dp").privacy.mechanism_audit == finding

    # A consistent audit adds no reason to fail.
    scenario = next(s for s in report.scenarios if s.name == "client-dp")
    verdict = judge(thresholds_of(report), scenario.privacy, scenario.attacks)
    assert not any("does not do what the accountant assumes" in reason for reason in verdict.reasons)


def test_inconsistent_mechanism_audit_fails_the_scenario(spec, data, monkeypatch, tmp_path):
    half_noise_shares(monkeypatch)
    finding = audit(spec, "client-dp-ckks", data)
    monkeypatch.undo()
    assert not finding.consistent
    report = with_mechanism_audit(fixture_report(), "client-dp", finding)
    scenario = next(s for s in report.scenarios if s.name == "client-dp")
    failure = finding.failure()

    for thresholds in (thresholds_of(report), None):  # a blocker, with thresholds or without
        verdict = judge(thresholds, scenario.privacy, scenario.attacks)
        assert verdict.passed is False
        assert failure in verdict.failed and failure in verdict.reasons
    # Without it, the same scenario's verdict does not carry that reason.
    before = next(s for s in fixture_report().scenarios if s.name == "client-dp")
    assert failure not in judge(thresholds_of(report), before.privacy, before.attacks).reasons

    markdown = render_markdown(report)
    assert "| inconsistent: a bug is likely |" in markdown
    assert "Does the privacy code do what it claims? Inconsistent" in markdown
    assert "inconsistent: a bug is likely</td>" in render_html(report, tmp_path)
    (item,) = [c for c in scenario_compliance(report) if c.scenario == "client-dp"]
    assert finding.statement() in item.leakage
    assert Report.from_json(json.loads(json.dumps(report.to_json(), allow_nan=False))) == report


def test_canary_clients_above_the_accountant_warn_but_never_fail_the_scenario(spec, data):
    finding = audit(spec, "client-dp-ckks", data)
    assert finding.consistent
    clients = audit_canary_clients(data, federation_builder(spec, "plain"), clients=10, unseen=200, norm=0.5,
                                   delta=1e-3, confidence=0.95, seed=3)
    # The leaky run's canaries, held against a claim of epsilon 1 against the public: an estimate, not a bound.
    claimed = dataclasses.replace(clients, accountant_epsilon=1.0)
    flagged = dataclasses.replace(finding, canary_clients=claimed)
    assert not claimed.within and flagged.consistent and flagged.failure() is None
    assert "worth a look" in flagged.statement()
    report = with_mechanism_audit(fixture_report(), "client-dp", flagged)
    scenario = next(s for s in report.scenarios if s.name == "client-dp")
    failed = judge(thresholds_of(report), scenario.privacy, scenario.attacks).failed
    assert not any("canary" in reason or "bug" in reason for reason in failed)  # (the fixture's seeded noise fails)
    markdown = render_markdown(report)
    assert "10 canary clients (Andrew et al. 2024)" in markdown and "estimate above: worth a look" in markdown
