"""What each position's view holds, and the round loop's account of rounds that combined nothing."""

from __future__ import annotations

import torch

from fedsecure.fl import FedAvg, FedBN, Federation, LocalTraining, ModelState
from fedsecure.fl.privacy_hooks import PrivacyMechanism
from fedsecure.fl.views import client_view, external_view, server_view
from fedsecure.positions import Position
from fedsecure.secure import CKKSAggregation
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


def test_the_client_and_external_views_hold_the_released_model():
    fed = federation()
    result = fed.run()
    released = ModelState(external_view(result).released_model).get()
    assert external_view(result).position is Position.EXTERNAL and torch.equal(released, result.trace.final_global)
    assert [s.numel() for s in client_view(result).global_states] == [released.numel()] * 2


def test_fedbn_the_server_never_sees_a_sites_normalization_layers():
    fed = federation(FedBN())
    server_private = {k: v.clone() for k, v in fed.state.get_private().items()}
    sent = fed.first_round_view(0).round(1).sent_model
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
