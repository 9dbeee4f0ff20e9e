import torch

from fedsecure.fl import ModelState
from fedsecure.models import build_model, normalization_state_names


def test_round_trip_and_private_entries_stay_out():
    model = build_model("densenet121", 1, 2, (32, 32))
    private = normalization_state_names(model)
    state = ModelState(model, private=private)
    vector = state.get()
    all_float = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    private_numel = sum(t.numel() for n, t in model.state_dict().items() if n in private and t.is_floating_point())
    assert state.numel == vector.numel() == all_float - private_numel
    state.set(torch.arange(state.numel, dtype=torch.float32))
    assert torch.equal(state.get(), torch.arange(state.numel, dtype=torch.float32))
    kept = state.get_private()
    assert set(kept) == {n for n in private if model.state_dict()[n].is_floating_point()}


def test_set_writes_in_state_dict_order():
    model = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.BatchNorm1d(1))
    state = ModelState(model)
    state.set(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]))
    assert model[0].weight.tolist() == [[1.0, 2.0]]
    assert model[0].bias.tolist() == [3.0]
    assert model[1].weight.tolist() == [4.0] and model[1].bias.tolist() == [5.0]
    assert model[1].running_mean.tolist() == [6.0] and model[1].running_var.tolist() == [7.0]
