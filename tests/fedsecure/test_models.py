import pytest
import torch
from opacus.validators import ModuleValidator
from torch import nn

from fedsecure.errors import NotSupportedError, UnknownNameError
from fedsecure.models import (
    MODELS,
    SEGMENTATION_MODELS,
    build_model,
    check_model_takes,
    make_dp_compatible,
    normalization_state_names,
)

CLASSIFIERS = [n for n in MODELS.names() if n not in SEGMENTATION_MODELS]


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_classifies_medmnist_sized_images(name, channels):
    model = build_model(name, channels, 3, (28, 28))
    assert model(torch.rand(2, channels, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("name", [n for n in CLASSIFIERS if n != "lenet-dlg"])
def test_every_volume_model_classifies_medmnist3d_volumes_and_is_dp_compatible_as_built(name):
    model = build_model(name, 1, 2, (28, 28, 28))
    assert model(torch.rand(2, 1, 28, 28, 28)).shape == (2, 2)
    assert any(isinstance(m, nn.Conv3d) for m in model.modules())
    assert ModuleValidator.validate(model, strict=False) == []


@pytest.mark.parametrize("name", SEGMENTATION_MODELS)
@pytest.mark.parametrize("size", [(28, 28), (20, 28, 24)])
def test_segmentation_networks_map_every_pixel_at_any_size_and_are_dp_compatible_as_built(name, size):
    # 28 and 20 are not multiples of the networks' 8: the input is padded and the output cropped back.
    model = build_model(name, 1, 3, size)
    assert model(torch.rand(2, 1, *size)).shape == (2, 3, *size)
    assert check_model_takes(model, 1, size) == (1, 3, *size)
    assert ModuleValidator.validate(model, strict=False) == []


def test_a_2d_model_on_volumes_is_refused_naming_the_ones_that_fit():
    message = "model 'lenet-dlg' takes 2D input but the data are 3D volumes of size 28x28x28; choose one of: cnn,"
    with pytest.raises(NotSupportedError, match=message):
        build_model("lenet-dlg", 1, 2, (28, 28, 28))


def test_same_seed_same_weights():
    a, b, c = (build_model("cnn", 1, 2, (28, 28), seed=seed) for seed in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters(), strict=True))


def test_unknown_model_lists_the_known_ones():
    message = "unknown model 'resnet9'; choose one of: cnn, lenet-dlg, classifier, densenet121, resnet"
    with pytest.raises(UnknownNameError, match=message):
        build_model("resnet9", 1, 2, (28, 28))


def test_default_cnn_is_dp_compatible_as_is():
    model = build_model("cnn", 1, 2, (28, 28))
    assert ModuleValidator.validate(model, strict=False) == []
    assert make_dp_compatible(model) is model


def _batchnorm_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )


def test_a_batchnorm_model_is_fixed_for_dp_with_a_warning():
    model = _batchnorm_net()
    assert ModuleValidator.validate(model, strict=False)
    with pytest.warns(UserWarning, match="BatchNorm -> GroupNorm"):
        fixed = make_dp_compatible(model)
    assert ModuleValidator.validate(fixed, strict=False) == []
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fixed.modules())
    assert fixed(torch.rand(2, 1, 28, 28)).shape == (2, 2)


def test_normalization_state_names_cover_groupnorm_and_batchnorm():
    cnn = build_model("cnn", 1, 2, (28, 28))
    assert normalization_state_names(cnn) == {f"features.{i}.{p}" for i in (1, 5, 9) for p in ("weight", "bias")}
    assert normalization_state_names(_batchnorm_net()) == {
        f"1.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }
    densenet = build_model("densenet121", 1, 2, (32, 32))
    names = normalization_state_names(densenet)
    assert names and all(".norm" in n or n.startswith("features.norm") for n in names)
    assert not any("conv" in n.rsplit(".", 2)[-2] for n in names)


class _Unfixable(nn.Module):
    """A layer a user taught Opacus to flag (as Opacus's validator registry intends) but gave no replacement."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 2))

    def forward(self, x):
        return x @ self.weight


def test_a_model_opacus_cannot_fix_is_refused():
    from opacus.validators import ModuleValidator, register_module_validator
    from opacus.validators.errors import UnsupportedModuleError

    register_module_validator(_Unfixable)(
        lambda module: [UnsupportedModuleError("custom layer without a DP replacement")]
    )
    try:
        message = "cannot be trained with DP-SGD: Opacus cannot replace .*custom layer"
        with pytest.raises(NotSupportedError, match=message):
            make_dp_compatible(nn.Sequential(nn.BatchNorm1d(4), _Unfixable()))
    finally:
        ModuleValidator.VALIDATORS.pop(_Unfixable)
