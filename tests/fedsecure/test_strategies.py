"""The federated math, pinned on cases small enough to compute by hand or by autograd directly."""

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedsecure.data import FederatedData, SiteData, Split
from fedsecure.fl import FedAdam, FedAvg, FedBN, Federation, FedProx, FedSGD, LocalTraining, ModelState, train_local
from fedsecure.models import build_model
from fedsecure.secure import PlainAggregation
from fedsecure.seeding import torch_generator


def make_data(sizes=(5,), seed=0) -> FederatedData:
    rng = np.random.default_rng(seed)
    sites = []
    for k, n in enumerate(sizes):
        train = Split(rng.random((n, 1, 8, 8), dtype=np.float32), (np.arange(n) % 2).astype(np.int64))
        test = Split(rng.random((4, 1, 8, 8), dtype=np.float32), np.array([0, 1, 0, 1]))
        sites.append(SiteData(f"site-{k}", train, test))
    return FederatedData(sites=sites, n_classes=2, in_channels=1, image_size=(8, 8))


def model():
    return build_model("cnn", 1, 2, (8, 8), seed=0)


def sgd_step(net, images, labels, lr):
    """One plain SGD step on the mean loss of (images, labels), by autograd directly."""
    net = copy.deepcopy(net)
    loss = F.cross_entropy(net(torch.from_numpy(images)), torch.from_numpy(labels))
    grads = torch.autograd.grad(loss, list(net.parameters()))
    with torch.no_grad():
        for p, g in zip(net.parameters(), grads, strict=True):
            p -= lr * g
    return ModelState(net).get()


def run(strategy, data, rounds=1, **training):
    options = {"epochs": 1, "batch_size": 64, "lr": 0.1} | training
    return Federation(data, model(), strategy, training=LocalTraining(**options), rounds=rounds, evaluate_every=0).run()


def test_fedavg_with_one_client_and_one_step_is_one_centralized_sgd_step():
    data = make_data((5,))
    result = run(FedAvg(), data)
    expected = sgd_step(model(), data.sites[0].train.images, data.sites[0].train.labels, lr=0.1)
    torch.testing.assert_close(result.trace.final_global, expected, rtol=1e-6, atol=1e-7)


def test_weighted_average_by_hand():
    roles = PlainAggregation().setup(2)
    messages = [
        roles.client.protect(torch.tensor([1.0, 2.0]), 1.0),
        roles.client.protect(torch.tensor([4.0, 8.0]), 3.0),
    ]
    mean = roles.client.reveal(roles.server.combine(messages))
    # (1*1 + 3*4) / 4 = 3.25, (1*2 + 3*8) / 4 = 6.5
    assert mean.tolist() == [3.25, 6.5]
    assert messages[0].nbytes == 2 * 4 + 4


def test_fedavg_weights_sites_by_their_sample_counts():
    data = make_data((2, 6))
    training = LocalTraining(epochs=1, batch_size=64, lr=0.1)
    result = Federation(data, model(), FedAvg(), training=training, rounds=1, evaluate_every=0).run()
    start = ModelState(model()).get()
    updates = [sgd_step(model(), s.train.images, s.train.labels, lr=0.1) - start for s in data.sites]
    expected = start + (2 * updates[0] + 6 * updates[1]) / 8
    torch.testing.assert_close(result.trace.final_global, expected, rtol=1e-5, atol=1e-7)


def test_fedsgd_with_all_sites_is_full_batch_gradient_descent_on_the_pooled_data():
    data = make_data((3, 7, 4))
    result = run(FedSGD(), data, rounds=1, batch_size=2)  # gradient computed in chunks of 2
    expected = sgd_step(model(), data.train.images, data.train.labels, lr=0.1)
    torch.testing.assert_close(result.trace.final_global, expected, rtol=1e-5, atol=1e-7)


def test_fedprox_equals_fedavg_for_one_step_and_pulls_towards_the_global_model_after():
    data = make_data((8,))
    one_step = dict(batch_size=64)
    fedprox, fedavg = (run(s, data, **one_step).trace.final_global for s in (FedProx(mu=1.0), FedAvg()))
    assert torch.equal(fedprox, fedavg)
    start = ModelState(model()).get()
    many = dict(batch_size=2, epochs=3)
    drift_avg = (run(FedAvg(), data, **many).trace.final_global - start).norm()
    drift_prox = (run(FedProx(mu=5.0), data, **many).trace.final_global - start).norm()
    assert drift_prox < drift_avg
    fedprox, fedavg = (run(s, data, **many).trace.final_global for s in (FedProx(mu=0.0), FedAvg()))
    assert torch.equal(fedprox, fedavg)


def test_fedadam_server_step_by_hand():
    strategy = FedAdam(server_lr=0.01, beta1=0.9, beta2=0.99, tau=1e-3)
    strategy.start(torch.zeros(2))
    new = strategy.server_update(torch.zeros(2), torch.tensor([1.0, -2.0]))
    m = [0.1 * 1.0, 0.1 * -2.0]
    v = [0.99 * 1e-6 + 0.01 * 1.0, 0.99 * 1e-6 + 0.01 * 4.0]
    expected = [0.01 * m[i] / (math.sqrt(v[i]) + 1e-3) for i in range(2)]
    torch.testing.assert_close(new, torch.tensor(expected), rtol=1e-6, atol=0)


def test_fedbn_keeps_normalization_at_each_site():
    data = make_data((6, 6), seed=1)
    federation = Federation(
        data, model(), FedBN(), training=LocalTraining(batch_size=2, lr=0.1), rounds=2, evaluate_every=0
    )
    result = federation.run()
    plain_numel = ModelState(model()).numel
    assert result.trace.final_global.numel() == plain_numel - 2 * (16 + 32 + 64)
    site0, site1 = (site.private for site in federation.sites)
    assert not torch.equal(site0["features.1.weight"], site1["features.1.weight"])
    assert result.trace.rounds[0].clients[0].bytes_up == result.trace.final_global.numel() * 4 + 4


def test_same_seed_same_run_and_the_seed_matters():
    data = make_data((10, 12))
    settings = dict(training=LocalTraining(batch_size=3), rounds=2, evaluate_every=0)
    a = Federation(data, model(), FedAvg(), seed=5, **settings).run().trace.final_global
    b = Federation(data, model(), FedAvg(), seed=5, **settings).run().trace.final_global
    c = Federation(data, model(), FedAvg(), seed=6, **settings).run().trace.final_global
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_client_sampling_trace_and_costs():
    data = make_data((4, 4, 4, 4))
    federation = Federation(
        data, model(), FedAvg(), training=LocalTraining(batch_size=2), rounds=3, clients_per_round=2, seed=3
    )
    trace = federation.run().trace
    numel = trace.final_global.numel()
    assert all(len(r.clients) == 2 for r in trace.rounds)
    assert len({tuple(c.site for c in r.clients) for r in trace.rounds}) >= 1
    assert set(trace.rounds[0].received) == {c.site for c in trace.rounds[0].clients}
    assert all(r.received is None for r in trace.rounds[1:])
    assert all(r.global_model is not None and r.utility is not None for r in trace.rounds)
    assert torch.equal(trace.rounds[0].global_model, ModelState(model()).get())
    assert trace.bytes_up_per_round == 2 * (numel * 4 + 4)
    assert trace.bytes_down_per_round == 4 * (numel * 4 + 4)
    assert all(c.steps == 2 for r in trace.rounds for c in r.clients)
    # what the server received is the site's update itself, and its weight relative to the smallest site's
    first = trace.rounds[0]
    message = next(iter(first.received.values()))
    assert message.plaintext and message.weight == 1.0 and message.payload.dtype == torch.float32
    same = Federation(
        data, model(), FedAvg(), training=LocalTraining(batch_size=2), rounds=3, clients_per_round=2, seed=3
    ).run().trace
    assert [[c.site for c in r.clients] for r in same.rounds] == [[c.site for c in r.clients] for r in trace.rounds]


def test_invalid_federation_settings_are_refused():
    data = make_data((4, 4))
    with pytest.raises(ValueError, match="clients_per_round"):
        Federation(data, model(), FedAvg(), training=LocalTraining(), rounds=1, clients_per_round=3)
    with pytest.raises(ValueError, match="rounds"):
        Federation(data, model(), FedAvg(), training=LocalTraining(), rounds=0)


def test_train_local_counts_steps_and_shuffles_deterministically():
    data = make_data((7,))
    images, labels = data.sites[0].train.tensors()
    nets = [model(), model()]
    training = LocalTraining(epochs=2, batch_size=3)
    steps = [train_local(n, images, labels, training, torch_generator(0, "x")) for n in nets]
    assert steps == [6, 6]  # ceil(7 / 3) = 3 per epoch
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True))
