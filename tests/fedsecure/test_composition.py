"""Every privacy mechanism composes with every strategy and every aggregation protocol, or is refused in one line.

The matrix runs each (strategy x protocol x DP level) through the spec, as a user writes it, on
a tiny federation; the pinned tests below check the composition's math where it is new: a
strategy's gradient correction is added after DP-SGD's clipping and noise, FedSGD under DP-SGD
is one full-batch step, SCAFFOLD's control variates and FedYogi's second moment.
"""

import functools
import math
import warnings

import numpy as np
import pytest
import torch

from fedsecure.config.spec import parse_spec
from fedsecure.data import FederatedData, SiteData, Split
from fedsecure.errors import SpecError
from fedsecure.fl import Federation, LocalTraining
from fedsecure.fl.strategies import STRATEGIES, FedAvg, FedProx, FedSGD, FedYogi, Scaffold
from fedsecure.models import build_model
from fedsecure.privacy import SampleLevelDP
from fedsecure.privacy.accounting import calibrate_noise

# The combinations refused before training, each with the reason its one line gives (none today: every
# strategy's local work runs inside DP-SGD's loop, and every message is one vector a protocol sums).
REFUSED: dict[tuple[str, str, str], str] = {}

DP_LEVELS = {
    "none": None,
    "sample": 'dp = { level = "sample", epsilon = 8.0, delta = 1e-3 }',
    "client": 'dp = { level = "client", epsilon = 8.0, delta = 1e-3, clip = 0.5, placement = "PLACEMENT" }',
}


def tiny_data(sizes=(12, 16), seed=0) -> FederatedData:
    rng = np.random.default_rng(seed)
    sites = []
    for k, n in enumerate(sizes):
        train = Split(rng.random((n, 1, 8, 8), dtype=np.float32), (np.arange(n) % 2).astype(np.int64))
        test = Split(rng.random((6, 1, 8, 8), dtype=np.float32), (np.arange(6) % 2).astype(np.int64))
        sites.append(SiteData(f"site-{k}", train, test))
    return FederatedData(sites=sites, n_classes=2, in_channels=1, image_size=(8, 8))


def spec_text(strategy: str, protocol: str, level: str) -> str:
    dp = DP_LEVELS[level]
    if dp is not None:
        # Central noise needs a server that reads the sum; under CKKS and SecAgg+ the sites add it in shares.
        dp = dp.replace("PLACEMENT", "central" if protocol == "plain" else "distributed")
    return (
        f'name = "matrix"\n[data]\nsites = 2\n[federation]\nstrategy = "{strategy}"\nrounds = 2\nbatch_size = 4\n'
        f'lr = 0.05\n[[scenario]]\nname = "s"\nprotocol = "{protocol}"\n' + (f"{dp}\n" if dp else "")
    )


def federation_of(text: str, data: FederatedData, model=None) -> Federation:
    spec = parse_spec(text, "matrix.toml").spec
    scenario = spec.scenario[0]
    return Federation(
        data, model if model is not None else build_model("cnn", 1, 2, (8, 8), seed=0),
        spec.federation.strategy_instance(), training=scenario.local_training(spec.federation, "classification"),
        rounds=spec.federation.rounds, protocol=scenario.protocol_instance(),
        privacy=scenario.dp.mechanism() if scenario.dp is not None else None, seed=spec.seed, evaluate_every=0,
    )


@pytest.mark.parametrize("level", list(DP_LEVELS))
@pytest.mark.parametrize("protocol", ["plain", "ckks", "secagg"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_every_strategy_protocol_and_dp_level_trains_with_a_finite_epsilon_or_is_refused_in_one_line(
    strategy, protocol, level
):
    text = spec_text(strategy, protocol, level)
    if (strategy, protocol, level) in REFUSED:
        with pytest.raises(SpecError) as refusal:
            parse_spec(text, "matrix.toml")
        assert "\n" not in str(refusal.value) and REFUSED[(strategy, protocol, level)] in str(refusal.value)
        return
    data = tiny_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seeded-noise and central-noise warnings are the scenario's own
        federation = federation_of(text, data)
        start = federation.state.get()
        result = federation.run()
    assert len(result.trace.rounds) == 2 and not result.trace.stopped_early
    final = result.trace.final_global
    assert torch.isfinite(final).all() and not torch.equal(final, start)  # the model moved
    assert math.isfinite(result.evaluation.global_.auc)
    if level == "none":
        assert result.trace.privacy is None
    else:
        privacy = result.trace.privacy
        assert privacy.level == level
        epsilons = [guarantee.epsilon for guarantee in privacy.by_adversary if guarantee.epsilon is not None]
        assert epsilons and all(0 < epsilon <= 8.0 + 1e-6 for epsilon in epsilons)  # accounted, within the target
        if (level, protocol) == ("client", "plain"):  # central noise: the server reads the sum before the noise
            assert privacy.epsilon is None and privacy.worst_party == "server"
        else:
            assert privacy.epsilon is not None and 0 < privacy.epsilon <= 8.0 + 1e-6
    expected_length = 2 * federation.state.numel if strategy == "scaffold" else federation.state.numel
    assert result.trace.rounds[0].received is not None
    message = next(iter(result.trace.rounds[0].received.values()))
    assert message.length == expected_length
    if level != "none" and strategy != "fedsgd":
        # A strategy's work is post-processing of the mechanism's releases: FedAvg's noise and epsilon, exactly.
        reference = fedavg_privacy(protocol, level)
        assert (privacy.noise_multiplier, privacy.epsilon, privacy.steps) == reference
    if (level, protocol) == ("client", "plain"):
        # Central noise: what a site sends is its clipped message, the whole of it (SCAFFOLD's control half too).
        for record in result.trace.rounds:
            for sent in (record.received or {}).values():
                assert float(sent.payload.norm()) <= 0.5 * (1 + 1e-5) + 1e-6  # the spec's default clip for client DP


@functools.cache
def fedavg_privacy(protocol: str, level: str) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        privacy = federation_of(spec_text("fedavg", protocol, level), tiny_data()).run().trace.privacy
    return privacy.noise_multiplier, privacy.epsilon, privacy.steps


@pytest.mark.parametrize(("grad_sample_mode", "secure_rng"), [("hooks", False), ("ghost", True)])
def test_the_proximal_term_is_added_after_dp_sgd_clips_and_noises_each_step(grad_sample_mode, secure_rng):
    """FedProx under DP-SGD: each step is the released (clipped, noised) gradient plus mu * (w_t - w_global).

    The clip is far below the proximal pull, so a pull added before clipping would be clipped
    away with the rest; each step must take the released gradient plus the whole pull, and the
    accountant must record the same mechanism as FedAvg's (post-processing costs nothing).
    """
    data = tiny_data((8,))
    lr, mu, clip = 0.1, 5.0, 1e-3
    training = LocalTraining(epochs=3, batch_size=4, lr=lr)
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (w_t - w_global, released, stepped)
    prox = FedProx(mu=mu)
    real_correction = prox.gradient_correction

    def recording(state, memory):
        correction = real_correction(state, memory)
        anchor = torch.cat([p.detach().reshape(-1).clone() for p in state.model.parameters()])

        def record(model):
            flat = lambda values: torch.cat([v.detach().reshape(-1).clone() for v in values])  # noqa: E731
            released = flat(p.grad for p in model.parameters())
            position = flat(model.parameters()) - anchor
            correction(model)
            seen.append((position, released, flat(p.grad for p in model.parameters())))

        return record

    prox.gradient_correction = recording
    privacies = {}
    for name, strategy in (("fedavg", FedAvg()), ("fedprox", prox)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            federation = Federation(data, build_model("cnn", 1, 2, (8, 8), seed=0), strategy, training=training,
                                    rounds=1, privacy=SampleLevelDP(epsilon=8.0, delta=1e-3, clip=clip,
                                                                    grad_sample_mode=grad_sample_mode,
                                                                    secure_rng=secure_rng),
                                    evaluate_every=0)
            start = torch.cat([p.detach().reshape(-1).clone() for p in federation.model.parameters()])
            result = federation.run()
        privacies[name] = result.trace.privacy
    assert len(seen) == 6  # 3 epochs x 2 Poisson batches: one correction per step
    assert all(float(released.norm()) > 0 for _, released, _ in seen)  # each step released a (noised) gradient
    for position, released, stepped in seen:
        torch.testing.assert_close(stepped - released, mu * position)  # the whole pull, unclipped
    assert max(float((mu * position).norm()) for position, _, _ in seen) > 10 * clip
    end = torch.cat([p.detach().reshape(-1) for p in federation.model.parameters()])
    torch.testing.assert_close(end - start, -lr * sum(stepped for _, _, stepped in seen), rtol=1e-4, atol=1e-6)
    assert privacies["fedprox"].epsilon == privacies["fedavg"].epsilon
    assert privacies["fedprox"].noise_multiplier == privacies["fedavg"].noise_multiplier
    assert privacies["fedprox"].steps == privacies["fedavg"].steps


def test_fedsgd_under_dp_sgd_is_one_noised_full_batch_step_per_round_accounted_at_rate_one():
    data = tiny_data((10, 6))
    rounds = 3
    privacy = SampleLevelDP(epsilon=4.0, delta=1e-3, clip=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = Federation(data, build_model("cnn", 1, 2, (8, 8), seed=0), FedSGD(),
                            training=LocalTraining(epochs=5, batch_size=2, lr=0.1), rounds=rounds, privacy=privacy,
                            evaluate_every=0).run()
    report = result.trace.privacy
    assert [client.steps for client in result.trace.rounds[0].clients] == [1, 1]  # not 5 epochs of batches of 2
    for site in report.per_site:
        assert site["sample_rate"] == 1.0 and site["steps"] == rounds
        assert site["noise_multiplier"] == pytest.approx(calibrate_noise(4.0, 1e-3, 1.0, rounds, "rdp"))
    assert report.epsilon <= 4.0 + 1e-6


def test_fedsgd_under_dp_sgd_takes_its_whole_site_step_in_chunks_with_one_noise():
    """Opacus's BatchMemoryManager: chunks of the batch size, clipped and added up, one noised step per round."""
    data = tiny_data((10,))
    updates = {}
    for batch_size in (2, 64):  # five chunks, or one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            federation = Federation(data, build_model("cnn", 1, 2, (8, 8), seed=0), FedSGD(),
                                    training=LocalTraining(batch_size=batch_size, lr=0.1), rounds=2,
                                    privacy=SampleLevelDP(epsilon=4.0, delta=1e-3, clip=0.5), evaluate_every=0)
            start = federation.state.get()
            result = federation.run()
        assert [c.steps for r in result.trace.rounds for c in r.clients] == [1, 1]
        assert result.trace.privacy.steps == 2 and result.trace.privacy.sample_rate == 1.0
        updates[batch_size] = result.trace.final_global - start
    torch.testing.assert_close(updates[2], updates[64], rtol=1e-4, atol=1e-6)


def test_scaffold_control_variates_by_hand():
    """Round 1 from zero controls: c_i = -update_i / (K_i lr), c = their weighted mean; round 2 corrects by c - c_i."""
    data = tiny_data((4, 8))
    training = LocalTraining(epochs=1, batch_size=4, lr=0.1)
    scaffold = Scaffold()
    federation = Federation(data, build_model("cnn", 1, 2, (8, 8), seed=0), scaffold, training=training, rounds=1,
                            evaluate_every=0, keep_messages="all")
    start = federation.state.get()
    result = federation.run()
    numel = federation.state.numel
    messages = {site: m.payload for site, m in result.trace.rounds[0].received.items()}
    steps = {"site-0": 1, "site-1": 2}
    controls = {}
    for site, payload in messages.items():
        update, control_update = payload[:numel], payload[numel:]
        controls[site] = -update / (steps[site] * 0.1)
        torch.testing.assert_close(control_update, controls[site])  # from c_i = 0 and c = 0
        torch.testing.assert_close(federation.sites[int(site[-1])].memory["control"], controls[site])
    expected_c = (4 * controls["site-0"] + 8 * controls["site-1"]) / 12
    torch.testing.assert_close(scaffold.server_state()["c"], expected_c, rtol=1e-5, atol=1e-6)
    expected_global = start + (4 * messages["site-0"][:numel] + 8 * messages["site-1"][:numel]) / 12
    torch.testing.assert_close(result.trace.final_global, expected_global, rtol=1e-5, atol=1e-7)
    # Round 2: site 0's correction is c - c_0 on every parameter it touches.
    state = federation.sites[0].state
    state.set(result.trace.final_global)
    correction = scaffold.gradient_correction(state, federation.sites[0].memory)
    for parameter in state.model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    correction(state.model)
    gradients = torch.cat([p.grad.reshape(-1) for p in state.model.parameters()])
    torch.testing.assert_close(gradients, (expected_c - controls["site-0"])[: gradients.numel()],
                               rtol=1e-5, atol=1e-6)


def test_fedyogi_server_step_by_hand():
    yogi = FedYogi(server_lr=0.5, beta1=0.9, beta2=0.99, tau=0.1)
    start = torch.tensor([1.0, -2.0])
    yogi.start(start)
    delta = torch.tensor([0.3, 0.05])
    moved = yogi.server_update(start, delta)
    m = 0.1 * delta
    v0 = torch.full((2,), 0.01)
    v = v0 - 0.01 * delta**2 * torch.sign(v0 - delta**2)  # 0.3^2 > v0 grows v; 0.05^2 < v0 shrinks it
    torch.testing.assert_close(moved, start + 0.5 * m / (v.sqrt() + 0.1))
    assert v[0] > v0[0] and v[1] < v0[1]


def test_scaffold_refuses_the_one_shot_canary_audit_in_one_line():
    text = spec_text("scaffold", "plain", "client") + "[attacks]\nmechanism = { canary_clients = 4 }\n"
    with pytest.raises(SpecError, match="canary_clients cannot audit strategy 'scaffold'"):
        parse_spec(text, "spec.toml")


def test_a_fedsgd_inversion_probe_adds_the_full_batch_noise_of_the_run():
    """The audit's probe pins the scenario's noise; under FedSGD that is one step of all images at rate 1."""
    training = LocalTraining(batch_size=8, epochs=2)
    probe = SampleLevelDP(epsilon=4.0, delta=1e-3)
    line = probe.pin_noise_to_site(20, training, 3, full_batch=True)
    assert probe.noise_multiplier == calibrate_noise(4.0, 1e-3, 1.0, 3, "rdp")
    assert "sampling rate 1" in line
    minibatch = SampleLevelDP(epsilon=4.0, delta=1e-3)
    minibatch.pin_noise_to_site(20, training, 3)
    assert minibatch.noise_multiplier == calibrate_noise(4.0, 1e-3, 1 / 3, 3 * 2 * 3, "rdp")
