"""Model registry: small CNNs and MONAI networks, chosen by name, for 2D images and 3D volumes.

Every builder takes MONAI's argument names (``in_channels``, ``out_channels``)
plus the input ``image_size``, (H, W) or (D, H, W): the data decide the spatial
dimensions, so a spec's ``model.name`` is all that changes between images and
volumes. A network built for one dimensionality only refuses the other in one
line (:class:`~fedsecure.errors.NotSupportedError`).

Normalization layers matter twice in federated medical imaging:

* **FedBN** (Li et al. 2021) keeps each site's normalization layers local, to
  absorb scanner shift; :func:`normalization_state_names` lists what stays home.
* **DP-SGD** cannot use BatchNorm: its statistics mix samples in a batch, so a
  per-sample gradient is undefined. Every registered network uses GroupNorm (or
  instance norm) from the start; :func:`make_dp_compatible` swaps BatchNorm for
  GroupNorm in any other model with Opacus's ``ModuleValidator`` and says so loudly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from monai.networks.layers import Conv, Pool
from monai.networks.nets import Classifier, DenseNet121, SegResNet, UNet, resnet10
from torch import nn

from fedsecure.errors import NotSupportedError
from fedsecure.registry import Registry
from fedsecure.seeding import derive_seed

ModelBuilder = Callable[[int, int, tuple[int, ...]], nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")

NORMALIZATION_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

# GroupNorm for MONAI's networks (their channel counts are multiples of 8): DP-SGD compatible as built.
GROUP_NORM = ("group", {"num_groups": 8})


class GroupNormCNN(nn.Module):
    """A small CNN with GroupNorm: three conv blocks, global pooling, a linear head; 2D or 3D.

    GroupNorm normalizes within a sample, so the network is DP-SGD compatible
    and its behaviour does not depend on the batch composition. About 24k
    parameters in 2D with the default channels.

    Args:
        spatial_dims: 2 for images, 3 for volumes.
        in_channels: image channels.
        out_channels: number of classes.
        channels: feature maps of the three conv blocks.
        groups: GroupNorm groups per block.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: tuple[int, int, int] = (16, 32, 64),
        groups: int = 4,
    ) -> None:
        super().__init__()
        conv, max_pool = Conv[Conv.CONV, spatial_dims], Pool[Pool.MAX, spatial_dims]
        global_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims]
        blocks: list[nn.Module] = []
        previous = in_channels
        for i, width in enumerate(channels):
            blocks += [
                conv(previous, width, kernel_size=3, padding=1),
                nn.GroupNorm(groups, width),
                nn.ReLU(),
                max_pool(2) if i < len(channels) - 1 else global_pool(1),
            ]
            previous = width
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(previous, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, out_channels)."""
        return self.classifier(self.features(x).flatten(1))


class ResizeInput(nn.Module):
    """Linear upsampling in front of a network that needs larger inputs (2D or 3D).

    MONAI's DenseNet121 halves the resolution five times and fails below 32 px;
    MedMNIST images and volumes are 28 px.
    """

    def __init__(self, network: nn.Module, size: int) -> None:
        super().__init__()
        self.size = size
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output on ``x`` resized to at least ``size`` along every axis."""
        spatial = x.shape[2:]
        if min(spatial) < self.size:
            mode = "bilinear" if len(spatial) == 2 else "trilinear"
            target = tuple(max(side, self.size) for side in spatial)
            x = nn.functional.interpolate(x, size=target, mode=mode, align_corners=False)
        return self.network(x)


class PadToMultiple(nn.Module):
    """Pads the input's sides up to a multiple of ``multiple`` (zeros, after the end), crops the output back.

    An encoder-decoder with k stride-2 levels needs sides divisible by 2^k to give an output
    of the input's size; padding keeps every voxel and costs nothing where the sides fit.
    """

    def __init__(self, network: nn.Module, multiple: int) -> None:
        super().__init__()
        self.network = network
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's per-pixel output at the input's size."""
        spatial = x.shape[2:]
        extra = [(-side) % self.multiple for side in spatial]
        if not any(extra):
            return self.network(x)
        padding = [amount for pad in reversed(extra) for amount in (0, pad)]
        out = self.network(nn.functional.pad(x, padding))
        return out[(slice(None), slice(None), *(slice(0, side) for side in spatial))]


def _spatial_dims(name: str, image_size: tuple[int, ...], supported: tuple[int, ...] = (2, 3)) -> int:
    """The spatial dimensions of ``image_size``, refused in one line when model ``name`` does not take them."""
    dims = len(image_size)
    if dims not in supported:
        kind = {2: "2D images", 3: "3D volumes"}.get(dims, f"{dims}-dimensional data")
        takes = " or ".join(f"{d}D" for d in supported)
        fits = [other for other in MODELS.names() if other != name and other not in _TWO_D_ONLY]
        raise NotSupportedError(
            f"model {name!r} takes {takes} input but the data are {kind} of size {'x'.join(map(str, image_size))}; "
            f"choose one of: {', '.join(fits)}"
        )
    return dims


@MODELS.register("cnn")
def cnn(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """The default, for images and volumes: :class:`GroupNormCNN` (about 24k parameters in 2D, 18k in 3D).

    Volumes get half the feature maps (8, 16, 32): a 3D convolution costs about 3x the
    work per output of a 2D one at every one of D times as many positions, and on a
    CPU the full width doubles a round's time.
    """
    dims = _spatial_dims("cnn", image_size)
    channels = (16, 32, 64) if dims == 2 else (8, 16, 32)
    return GroupNormCNN(dims, in_channels=in_channels, out_channels=out_channels, channels=channels)


class LeNetDLG(nn.Module):
    """The LeNet-style network of DLG (Zhu et al. 2019): sigmoid convolutions, one linear head.

    Three 5x5 convolutions (12 maps; stride 2, 2, 1) with sigmoid activations
    and no pooling. Smooth activations and no pooling make its gradients
    nearly invertible, so it is the standard yardstick of gradient-inversion
    attacks, not a network to train for accuracy. Weights and biases are drawn
    from U(-0.5, 0.5) as in the DLG paper's code. 2D only, as published.

    Args:
        in_channels: image channels.
        out_channels: number of classes.
        image_size: input height and width (fixes the linear head's width).
        channels: feature maps of each convolution.
    """

    def __init__(
        self, in_channels: int = 1, out_channels: int = 2, image_size: tuple[int, int] = (28, 28), channels: int = 12
    ) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(channels, channels, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(channels, channels, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        height, width = (-(-side // 4) for side in image_size)  # two stride-2 convolutions with padding 2
        self.classifier = nn.Linear(channels * height * width, out_channels)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, out_channels)."""
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("lenet-dlg")
def lenet_dlg(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """:class:`LeNetDLG`, the gradient-inversion yardstick (about 8k parameters at 28 px; 2D only)."""
    _spatial_dims("lenet-dlg", image_size, supported=(2,))
    return LeNetDLG(in_channels=in_channels, out_channels=out_channels, image_size=(image_size[0], image_size[1]))


_TWO_D_ONLY = ("lenet-dlg",)

#: The networks that give a class map per pixel (``data.task = "segmentation"``); the others classify.
SEGMENTATION_MODELS = ("unet", "segresnet")


@MODELS.register("classifier")
def classifier(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """MONAI's ``Classifier``: three residual units (16, 32, 64 maps, stride 2, instance norm), a linear head.

    About 97k parameters at 28 px, most of them in the head over the flattened
    feature map, so it can memorize a small training set: the model to audit
    membership leakage on (the default ``cnn`` pools globally and generalizes).
    """
    _spatial_dims("classifier", image_size)
    return Classifier(
        in_shape=(in_channels, *image_size), classes=out_channels, channels=(16, 32, 64), strides=(2, 2, 2)
    )


@MODELS.register("densenet121")
def densenet121(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """MONAI's DenseNet121 with GroupNorm (about 7M parameters in 2D, 11M in 3D), randomly initialised."""
    network = DenseNet121(
        spatial_dims=_spatial_dims("densenet121", image_size), in_channels=in_channels, out_channels=out_channels,
        norm=GROUP_NORM,
    )
    return ResizeInput(network, 32) if min(image_size) < 32 else network


@MODELS.register("resnet")
def resnet(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """MONAI's ResNet-10 (Med3D's depth) with GroupNorm, randomly initialised (about 5M parameters in 2D, 14M in 3D)."""
    from opacus.validators import ModuleValidator

    network = resnet10(
        spatial_dims=_spatial_dims("resnet", image_size), n_input_channels=in_channels, num_classes=out_channels,
        norm=GROUP_NORM,
    )
    # MONAI 1.6's ResNet applies ``norm`` to its stem only (``_make_layer`` is not passed it): the residual
    # blocks still get BatchNorm, which Opacus's own fix turns into GroupNorm.
    return ModuleValidator.fix(network)


@MODELS.register("unet")
def unet(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """MONAI's ``UNet`` for segmentation, GroupNorm, three stride-2 levels (inputs padded to multiples of 8).

    Feature maps (16, 32, 64, 128) in 2D (about 0.16M parameters), (8, 16, 32, 64) in 3D (about
    0.12M: a volume's full-resolution maps dominate both the time and DP-SGD's per-sample
    gradients). No residual units: with them MONAI normalizes the last up-convolution's
    ``out_channels`` maps, which GroupNorm(8) cannot take for 2 or 3 classes.
    """
    dims = _spatial_dims("unet", image_size)
    channels = (16, 32, 64, 128) if dims == 2 else (8, 16, 32, 64)
    network = UNet(
        spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, channels=channels,
        strides=(2, 2, 2), num_res_units=0, norm=GROUP_NORM,
    )
    return PadToMultiple(network, 8)


@MODELS.register("segresnet")
def segresnet(in_channels: int, out_channels: int, image_size: tuple[int, ...]) -> nn.Module:
    """MONAI's ``SegResNet`` (Myronenko 2018) with GroupNorm, 8 initial filters (inputs padded to multiples of 8)."""
    network = SegResNet(
        spatial_dims=_spatial_dims("segresnet", image_size), init_filters=8, in_channels=in_channels,
        out_channels=out_channels, norm=GROUP_NORM,
    )
    return PadToMultiple(network, 8)


def build_model(
    name: str, in_channels: int, out_channels: int, image_size: tuple[int, ...], seed: int = 0
) -> nn.Module:
    """Build registered model ``name`` for images of ``image_size`` with weights initialised from ``seed``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        NotSupportedError: the model does not take data of that many spatial dimensions.
    """
    builder = MODELS.get(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "model-init"))
        return builder(in_channels, out_channels, image_size)


def check_model_takes(model: nn.Module, in_channels: int, image_size: tuple[int, ...]) -> tuple[int, ...]:
    """Run ``model`` once on a blank image of ``image_size``: a network that cannot take it is refused now.

    Returns:
        The shape of its output on one image, (1, classes) or (1, classes, *spatial), for the task to check.

    Raises:
        NotSupportedError: the forward pass fails (a side too small for the network's poolings, say),
            before any training.
    """
    first = next(model.parameters(), None)
    blank = torch.zeros((1, in_channels, *image_size), device=first.device if first is not None else "cpu")
    was_training = model.training
    try:
        with torch.no_grad():
            return tuple(model.eval()(blank).shape)
    except RuntimeError as exc:
        size = "x".join(map(str, image_size))
        reason = " ".join(str(exc).split())[:160]
        hint = "; bring the images to a larger size (data.size)" if "too small" in reason.lower() else ""
        raise NotSupportedError(
            f"model {type(model).__name__} cannot take images of {in_channels} channel(s) and size {size} "
            f"({reason}){hint}"
        ) from None
    finally:
        model.train(was_training)


def make_dp_compatible(model: nn.Module) -> nn.Module:
    """Return ``model`` fixed for DP-SGD with Opacus's ModuleValidator.

    A model that already validates is returned unchanged. Otherwise BatchNorm
    layers become GroupNorm (and other unsupported layers are replaced as
    Opacus knows how), with a warning, because this changes the architecture
    the user asked for.

    Raises:
        NotSupportedError: a layer Opacus flags has no replacement.
    """
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if not problems:
        return model
    fixed = ModuleValidator.fix(model)
    remaining = ModuleValidator.validate(fixed, strict=False)
    if remaining:
        raise NotSupportedError(
            f"{type(model).__name__} cannot be trained with DP-SGD: Opacus cannot replace "
            f"{'; '.join(sorted({str(p) for p in remaining}))}"
        )
    warnings.warn(
        f"{type(model).__name__} has {len(problems)} layers DP-SGD cannot train (BatchNorm and the like); "
        "replaced them with Opacus's ModuleValidator.fix (BatchNorm -> GroupNorm): "
        "the trained network is not the architecture that was asked for",
        stacklevel=2,
    )
    return fixed


def normalization_state_names(model: nn.Module) -> set[str]:
    """Names (as in ``state_dict``) of every parameter and buffer of a normalization layer."""
    names = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORMALIZATION_LAYERS):
            prefix = f"{module_name}." if module_name else ""
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
            names.update(prefix + n for n, _ in module.named_buffers(recurse=False))
    return names
