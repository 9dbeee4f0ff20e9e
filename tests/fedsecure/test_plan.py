"""``fedsecure plan``: each DP scenario's noise and guarantee before any training, as the audit will report it."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from fedsecure.audit.plan import plan_study
from fedsecure.cli import main
from fedsecure.config.spec import load_spec
from fedsecure.fl.privacy_hooks import FederationFacts
from fedsecure.fl.training import LocalTraining
from fedsecure.privacy import SampleLevelDP

FIXTURES = Path(__file__).parent.parent / "fixtures"


def cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_the_plan_agrees_with_the_epsilons_the_audit_reported():
    """report-tiny.json is a real audit of report-tiny.toml: the plan, untrained, must give its epsilons."""
    spec = load_spec(FIXTURES / "report-tiny.toml").spec
    plans = {p.scenario: p for p in plan_study(spec, spec.data.federated(spec.seed))}
    report = json.loads((FIXTURES / "report-tiny.json").read_text())
    audited = {s["name"]: s["privacy"] for s in report["scenarios"] if s["privacy"]["epsilon"] is not None}
    assert set(plans) == set(audited) == {"sample-dp", "client-dp"}
    for name, privacy in audited.items():
        assert plans[name].epsilon == pytest.approx(privacy["epsilon"], rel=1e-12)
        assert plans[name].by_adversary == pytest.approx(
            {party: g["epsilon"] for party, g in privacy["epsilon_by_adversary"].items()}, rel=1e-12
        )
    # The noise, by hand: z * clip / expected batch for DP-SGD (Opacus's int(20 images x rate 1/3) = 6); z * clip /
    # 2 sites for client-level DP; the ratio is the noise's norm over sqrt(d) coordinates against the clip.
    sample, client = plans["sample-dp"], plans["client-dp"]
    mechanism = audited["sample-dp"]["mechanism"]
    assert sample.noise_multiplier == pytest.approx(mechanism["noise_multiplier"], rel=1e-12)
    assert sample.noise_per_coordinate == pytest.approx(sample.noise_multiplier * 1.0 / 6)
    assert sample.noise_to_signal == pytest.approx(sample.noise_multiplier * math.sqrt(sample.message_length) / 6)
    assert client.noise_per_coordinate == pytest.approx(client.noise_multiplier * 0.5 / 2)
    assert client.noise_to_signal == pytest.approx(client.noise_multiplier * math.sqrt(client.message_length) / 2)


def test_more_sites_bring_client_level_noise_under_a_target(capsys):
    spec = load_spec(FIXTURES / "report-tiny.toml").spec
    data = spec.data.federated(spec.seed)
    (client,) = [p for p in plan_study(spec, data, noise_to_signal=2.0) if p.level == "client"]
    sites = client.sites_for_target
    assert sites is not None and sites > 2  # two sites are far above it (ratio 56.7)
    # The answer is the fewest: each count's own calibration (distributed noise splits over m shares).
    scenario = spec.scenario_named("client-dp")

    def ratio(m):
        mechanism = scenario.dp.mechanism()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mechanism.calibrate(FederationFacts([20] * m, 3, LocalTraining(), None, 1, torch.device("cpu"),
                                                updates_hidden=True))
        return mechanism.update_noise_multiplier * math.sqrt(client.message_length) / m

    assert ratio(sites) <= 2.0 < ratio(sites - 1)
    code, out, _ = cli(["plan", FIXTURES / "report-tiny.toml", "--noise-to-signal", "2", "--json"], capsys)
    assert code == 0
    printed = {p["scenario"]: p for p in json.loads(out)}
    assert printed["client-dp"]["sites_for_target"] == sites and printed["sample-dp"]["sites_for_target"] is None


def test_plan_prints_a_table_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    code, out, _ = cli(["plan", FIXTURES / "report-tiny.toml"], capsys)
    assert code == 0 and "sample-dp" in out and "client-dp" in out and "noise / signal" in out
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[scenario]]\nname = "s"\ndp = { level = "sample", epsilon = [1, 1], delta = 1e-5 }\n')
    code, out, err = cli(["plan", bad], capsys)
    assert code == 2 and err.count("\n") == 1 and "the sweep repeats a value" in err
    code, _, err = cli(["plan", FIXTURES / "report-tiny.toml", "--noise-to-signal", "0"], capsys)
    assert code == 2 and err.count("\n") == 1


@pytest.mark.parametrize(("images", "batch_size", "full_batch"), [(740, 8, False), (20, 8, True), (37, 4, False)])
def test_the_planned_schedule_is_the_one_opacus_runs(images, batch_size, full_batch):
    """The plan's noise, rate and steps are the run's, its Opacus loader built.

    740 images in batches of 8 are 93 batches, which Opacus's loader runs as 92 steps at rate 1/92;
    FedSGD is one step of everything at rate 1.
    """
    mechanism = SampleLevelDP(epsilon=4.0, delta=1e-4, clip=1.0)
    training = LocalTraining(batch_size=batch_size, epochs=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mechanism.prepare_model(torch.nn.Linear(4, 2))
        mechanism.calibrate(FederationFacts([images], 3, training, None, 0, torch.device("cpu"),
                                            full_batch=full_batch))
        planned = mechanism.planned_report().per_site[0]
        site = mechanism._site(0, torch.zeros(images, 4), torch.zeros(images, dtype=torch.long))
    assert planned["noise_multiplier"] == site.noise_multiplier
    assert planned["sample_rate"] == site.sample_rate
    assert planned["steps"] == site.steps_per_round * 3
    if full_batch:
        assert site.sample_rate == 1.0 and site.steps_per_round == 1
    if images == 740:
        assert site.steps_per_round == 2 * 92
