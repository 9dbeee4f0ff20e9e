"""What each position's view holds, and the round loop's account of rounds that combined nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsecure.fl import FedAvg, FedBN, Federation, LocalTraining, ModelState
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.strategies import FedSGD
from fedsecure.fl.views import client_view, external_view, server_view
from fedsecure.positions import Position
from fedsecure.secure import CKKSAggregation
from fedsecure.secure.fixed_point import to_grid, weighted_mean
from tests.fedsecure.test_strategies import make_data, model


def federation(strategy=None, **options) -> Federation:
    settings = {"training": LocalTraining(batch_size=2, lr=0.1), "rounds": 2, "evaluate_every": 0} | options
    return Federation(make_data((6, 6), seed=1), model(), strategy or FedAvg(), **settings)


def test_the_server_view_holds_the_sent_model_and_each_plaintext_update_by_parameter():
    fed = federation()
    initial = fed.state.get().clone()
    result = fed.run()
    view = server_view(result.trace, fed.state, fed.recipe, fed.server_private)
    assert view.position is Position.SERVER and view.sees_plaintext
    first = view.round(1)
    assert ModelState(first.sent_model).get().equal(initial)
    assert set(first.received) == {"site-0", "site-1"}
    update = first.received["site-0"].parameters
    assert set(update) == {name for name, _ in model().named_parameters()}
    # The payload is the update, flattened in the state's order: the view only names its parts.
    payload = result.trace.rounds[0].received["site-0"].payload
    assert torch.equal(torch.cat([update[n].flatten() for n, _ in model().named_parameters()]), payload)


def test_under_ckks_the_server_view_holds_ciphertexts_only():
    fed = federation(protocol=CKKSAggregation())
    view = server_view(fed.run().trace, fed.state, fed.recipe, fed.server_private)
    assert not view.sees_plaintext
    assert all(u.parameters is None for r in view.rounds for u in r.received.values())
    # The sites apply the decrypted aggregate themselves: the server never holds a round's global model.
    assert all(r.sent_model is None for r in view.rounds)
    assert fed.server_probe_view(0).round(1).sent_model is None


def test_the_client_and_external_views_hold_the_released_model():
    fed = federation()
    result = fed.run()
    released = ModelState(external_view(result).released_model).get()
    assert external_view(result).position is Position.EXTERNAL and torch.equal(released, result.trace.final_global)
    assert [s.numel() for s in client_view(result, "site-0").global_states] == [released.numel()] * 2


def test_fedbn_the_server_never_sees_a_sites_normalization_layers():
    fed = federation(FedBN())
    server_private = {k: v.clone() for k, v in fed.state.get_private().items()}
    sent = fed.server_probe_view(0).round(1).sent_model
    result = fed.run()
    for name, tensor in sent.state_dict().items():
        if name in server_private:
            assert torch.equal(tensor, server_private[name]), name
    trained = fed.sites[0].private
    assert any(not torch.equal(trained[n], server_private[n]) for n in server_private)  # the site's did move
    for name, tensor in result.released_model.state_dict().items():
        if name in server_private:
            assert torch.equal(tensor, server_private[name]), name
    # The same for the models of the trace's view, built after the sites trained.
    for name, tensor in server_view(result.trace, fed.state, fed.recipe, fed.server_private).round(1) \
            .sent_model.state_dict().items():
        if name in server_private:
            assert torch.equal(tensor, server_private[name]), name


class NobodySampled(PrivacyMechanism):
    """A mechanism whose sampling picks no site in round 1 (as Poisson sampling can)."""

    def sample_clients(self, round_number, n_sites, rng):
        return [] if round_number == 1 else list(range(n_sites))


def test_a_round_that_sampled_nobody_says_so_and_keeps_the_model():
    fed = federation(privacy=NobodySampled())
    initial = fed.state.get().clone()
    result = fed.run()
    first, second = result.trace.rounds
    assert first.clients == [] and torch.equal(first.global_model, initial)
    assert second.clients and torch.equal(second.global_model, initial)
    assert result.trace.events == ["round 1: no site was sampled; the global model stays as it was"]


def three_site_federation(protocol=None, sizes=(6, 6, 6)) -> Federation:
    settings = {"training": LocalTraining(batch_size=2, lr=0.1), "rounds": 2, "evaluate_every": 0}
    return Federation(make_data(sizes, seed=2), model(), FedAvg(), protocol=protocol, **settings)


def plaintext_messages(fed: Federation) -> list[torch.Tensor]:
    """Every site's round-1 message as the plain protocol carries it (what the client view must not hold)."""
    view = server_view(fed.run().trace, fed.state, fed.recipe, fed.server_private)
    return [u.message.payload for u in view.round(1).received.values()]


def test_a_client_view_holds_its_own_message_and_the_sums_never_another_sites_message():
    fed = three_site_federation()
    seat = fed.client_probe_view(0)
    revealed = seat.revealed[0]
    assert seat.position is Position.CLIENT and seat.site == "site-0" and revealed.senders == 3
    others = plaintext_messages(three_site_federation())  # the same round, run again: the same messages
    own, rest = others[0], others[1:]
    assert torch.equal(revealed.sent, own)
    # Nothing the view holds is another site's message: not its own, not the sums, not the others' mean.
    held = [revealed.sent, torch.from_numpy(revealed.total).double(), revealed.others_mean(), *seat.global_states]
    for tensor in held:
        for message in rest:
            assert tensor.numel() != message.numel() or not torch.allclose(tensor.double(), message.double(),
                                                                            atol=1e-6)
    # What it does hold: the other two sites' mean, exactly (equal weights).
    assert torch.allclose(revealed.others_mean(), (rest[0] + rest[1]) / 2, atol=1e-7)


@pytest.mark.parametrize("protocol", [None, CKKSAggregation()], ids=["plain", "ckks"])
def test_with_two_sites_a_client_holds_the_other_sites_update_even_under_ckks(protocol):
    fed = Federation(make_data((3, 9), seed=3), model(), FedSGD(), training=LocalTraining(lr=0.1), rounds=1,
                     protocol=protocol, evaluate_every=0)
    seat = fed.client_probe_view(1)
    plain = Federation(make_data((3, 9), seed=3), model(), FedSGD(), training=LocalTraining(lr=0.1), rounds=1,
                       evaluate_every=0)
    victim = server_view(plain.run().trace, plain.state, plain.recipe, plain.server_private).round(1).received["site-0"]
    recovered = seat.others_update(1)
    assert set(recovered) == set(victim.parameters)
    for name, value in recovered.items():  # unequal weights (3 and 9 images) and CKKS: still exact on the grid
        assert torch.allclose(value, victim.parameters[name], atol=1e-6), name


def test_the_server_rebuilds_each_sites_last_local_model_from_the_kept_rounds():
    fed = federation(keep_messages="ends", rounds=3)
    result = fed.run()
    view = server_view(result.trace, fed.state, fed.recipe, fed.server_private)
    assert [r.round for r in view.rounds] == [1, 3]
    local = view.local_models()
    assert set(local) == {1, 3} and set(local[3]) == {"site-0", "site-1"}
    start = result.trace.rounds[2].global_model
    payload = result.trace.rounds[2].received["site-1"].payload
    assert torch.allclose(ModelState(local[3]["site-1"]).get(), start + payload, atol=1e-7)
    # Under CKKS it rebuilds none.
    encrypted = federation(keep_messages="ends", protocol=CKKSAggregation())
    assert server_view(encrypted.run().trace, encrypted.state, encrypted.recipe,
                       encrypted.server_private).local_models() == {}


def test_the_other_sites_mean_is_the_protocols_own_grid_sum_exactly():
    # Weights 3, 7 and 9 images over the unit 3: the observer's 7/3 is not on the grid, and the others' sum is
    # still exactly what the protocol summed for them, less nothing.
    sizes = (3, 7, 9)
    seat = three_site_federation(sizes=sizes).client_probe_view(1).revealed[0]
    fed = three_site_federation(sizes=sizes)
    received = server_view(fed.run().trace, fed.state, fed.recipe, fed.server_private).round(1).received
    others = [received["site-0"].message, received["site-2"].message]
    total = sum(to_grid(m.payload.double().numpy() * m.weight) for m in others)
    weight = sum(int(to_grid(np.array(m.weight))) for m in others)
    assert torch.equal(seat.others_mean(), weighted_mean(total, weight))
