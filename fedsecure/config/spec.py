"""The audit spec: a TOML file validated as a whole, with errors that name the field.

This is the configuration layer: it checks names against the registries and
turns the spec into plain keyword arguments for the library's constructors.
Constructors never see a spec or a dictionary of settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attacks.inversion import INVERSION_ATTACKS
from attacks.membership import MEMBERSHIP_ATTACKS
from fedsecure.data.federated import (
    DATA_SOURCES,
    FederatedData,
    SiteData,
    TrainSubset,
    federate,
    federate_site_files,
)
from fedsecure.data.files import DatalistSplitter, SiteDatalist, SiteDatalists
from fedsecure.data.image_files import Preprocessing, default_cache_dir
from fedsecure.data.partition import PARTITIONERS
from fedsecure.errors import FedsecureError, SpecError
from fedsecure.fl.strategies import STRATEGIES
from fedsecure.fl.study import STUDY_METHODS
from fedsecure.fl.task import TASKS
from fedsecure.fl.training import OPTIMIZERS, LocalTraining
from fedsecure.models import MODELS
from fedsecure.positions import Position
from fedsecure.privacy import ACCOUNTANTS, DP_LEVELS
from fedsecure.registry import Registry
from fedsecure.secure import ckks, plain, secagg  # noqa: F401 - each registers its protocol in PROTOCOLS
from fedsecure.secure.ckks_params import PRESETS as CKKS_PRESETS
from fedsecure.secure.protocol import PROTOCOLS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_SPEC = Path(__file__).with_name("default.toml")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# Strategy options live in [federation] beside the common fields; each belongs
# to the strategies whose dataclass has a field of that name.
STRATEGY_OPTIONS = ("mu", "server_lr", "beta1", "beta2", "tau")


def _safe_name(value: str) -> str:
    # Names become file names in the output directory.
    if not _SAFE_NAME.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]

SWEEPS = {"epsilon": "eps", "clip": "clip"}
"""The dp options a scenario may sweep (a list of values), with the suffix each value's scenario is named by."""


def registered_in(registry: Registry) -> AfterValidator:
    """Validator for a string field that must name an entry of ``registry``.

    Used as ``Annotated[str, registered_in(MODELS)]``: a type that mypy reads as
    ``str`` and pydantic checks against the registry.
    """

    def check(value: str) -> str:
        if value not in registry:
            raise ValueError(f"unknown {registry.kind} {value!r}; choose one of: {', '.join(registry.names())}")
        return value

    return AfterValidator(check)


def _construct(cls: type, **options: Any) -> Any:
    """``cls(**options)``, passing only the options that ``cls`` (a dataclass) takes.

    The spec keeps the options of all implementations of one interface side by
    side (``alpha`` for the partitioners that use it, ``mu`` for FedProx); each
    implementation picks its own, so no if/elif on names is needed.
    """
    accepted = _init_fields(cls)
    return cls(**{name: value for name, value in options.items() if name in accepted})


def _init_fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteSpec(_Section):
    """``[[data.site]]``: one hospital of a ``files`` source, with its own datalist."""

    name: SafeName
    datalist: Path


# Synthetic volumes are held in memory as float32: 128^3 is 8 MiB each.
MAX_SYNTHETIC_VOLUME_SIDE = 128

# The [data] fields that describe image files; they apply to source "files" only.
FILE_OPTIONS = (
    "datalist", "site", "orientation", "spacing", "size", "size_mode", "window", "percentiles",
    "val_fraction", "test_fraction", "cache", "cache_dir",
)


class DataSpec(_Section):
    """``[data]``: where the images come from and how they are split across sites.

    ``source = "files"`` reads a hospital's own files through MONAI: either one
    datalist per site (``[[data.site]]``, each site one hospital) or one
    ``datalist`` federated by ``partition`` like a MedMNIST file; with the
    declared preprocessing (``orientation``, ``spacing``, intensity ``window`` or
    ``percentiles``, ``size`` by ``size_mode``), cached in ``cache_dir``.

    ``task = "segmentation"``: labels are masks (``*_masks`` arrays of a MedMNIST-style
    file, mask files in a datalist's ``label``, or the synthetic phantoms' masks).
    """

    source: Annotated[str, registered_in(DATA_SOURCES)] = "synthetic"
    task: Annotated[str, registered_in(TASKS)] = "classification"
    path: Path | None = None
    sites: int = Field(4, ge=1, le=1000)
    partition: Annotated[str, registered_in(PARTITIONERS)] = "iid"
    alpha: float = Field(0.5, gt=0)
    min_site_samples: int = Field(8, ge=1)
    train_samples: int = Field(1600, ge=2, le=1_000_000)
    val_samples: int = Field(200, ge=0, le=1_000_000)
    test_samples: int = Field(400, ge=2, le=1_000_000)
    image_size: int = Field(28, ge=16, le=512)
    spatial_dims: Literal[2, 3] = 2
    train_subset: int | None = Field(None, ge=2)
    datalist: Path | None = None
    site: list[SiteSpec] | None = Field(None, min_length=1, max_length=1000)
    orientation: str | None = Field(None, pattern=r"^[LRAPSI]{2,3}$")
    spacing: list[Annotated[float, Field(gt=0)]] | None = Field(None, min_length=2, max_length=3)
    size: list[Annotated[int, Field(ge=4, le=1024)]] | None = Field(None, min_length=2, max_length=3)
    size_mode: Literal["crop_pad", "resize"] = "crop_pad"
    window: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    cache: bool = True
    cache_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _sites_from_site_list(cls, raw: Any) -> Any:
        # Per-site datalists fix the number of sites; `sites` may repeat it but not contradict it.
        if isinstance(raw, dict) and isinstance(raw.get("site"), list):
            given = raw.get("sites")
            if given is not None and given != len(raw["site"]):
                raise ValueError(f"sites = {given} but {len(raw['site'])} [[data.site]] entries are listed")
            raw = {**raw, "sites": len(raw["site"])}
        return raw

    @model_validator(mode="after")
    def _source_fields(self) -> DataSpec:
        if self.source == "medmnist" and self.path is None:
            raise ValueError("source 'medmnist' needs path = the .npz file")
        if self.source == "synthetic" and self.path is not None:
            raise ValueError("source 'synthetic' generates its images and takes no path")
        if self.source == "files" and self.path is not None:
            raise ValueError("source 'files' reads datalist or [[data.site]] datalists, not path")
        if self.source == "synthetic" and self.train_samples < self.sites * self.min_site_samples:
            raise ValueError(
                f"train_samples {self.train_samples} cannot give {self.sites} sites "
                f"{self.min_site_samples} samples each"
            )
        if self.spatial_dims != 2 and self.source != "synthetic" and "spatial_dims" in self.model_fields_set:
            raise ValueError("spatial_dims applies to source 'synthetic' only (files decide their own)")
        if self.spatial_dims == 3 and self.image_size > MAX_SYNTHETIC_VOLUME_SIDE:
            raise ValueError(
                f"image_size {self.image_size} for synthetic volumes: at most {MAX_SYNTHETIC_VOLUME_SIDE} "
                "(every volume is generated in memory)"
            )
        if TASKS.get(self.task).masks and self.partition == "dirichlet":
            raise ValueError(
                "partition 'dirichlet' skews the classes each site holds, and a mask is not one class: "
                "segmentation takes 'iid' or 'quantity' (site sizes in Dirichlet proportions)"
            )
        stray = [name for name in FILE_OPTIONS if name in self.model_fields_set]
        if self.source != "files" and stray:
            raise ValueError(f"{', '.join(stray)}: image-file options apply to source 'files' only")
        if self.source == "files":
            self._check_files()
        return self

    def _check_files(self) -> None:
        if (self.datalist is None) == (self.site is None):
            raise ValueError("source 'files' needs either datalist = one datalist, or [[data.site]] entries (one each)")
        if self.site is not None:
            if "partition" in self.model_fields_set:
                raise ValueError("partition does not apply to [[data.site]]: each site's datalist is its split")
            if self.train_subset is not None:
                raise ValueError("train_subset applies to one pooled dataset, not to [[data.site]] datalists")
            names = [site.name for site in self.site]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"[[data.site]] names repeat: {', '.join(repeated)}")
        if self.window is not None and "percentiles" in self.model_fields_set:
            raise ValueError("window and percentiles are two ways to scale intensities; set one")
        if self.orientation is not None:
            axes = [next((k for k, pair in enumerate(("LR", "AP", "SI")) if letter in pair), -1)
                    for letter in self.orientation]
            if len(set(axes)) != len(axes):
                raise ValueError(
                    f"orientation {self.orientation!r} names an axis twice; one letter each of L/R, A/P (and S/I)"
                )
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError(f"window {list(self.window)}: the lower bound must be below the upper")
        low, high = self.percentiles
        if not 0 <= low < high <= 100:
            raise ValueError(f"percentiles {[low, high]}: need 0 <= lower < upper <= 100")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must leave images to train on (< 1)")
        lengths = {name: len(value) for name in ("spacing", "size") if (value := getattr(self, name)) is not None}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"spacing and size give different numbers of axes ({lengths})")

    def partitioner(self) -> Any:
        """The partitioner instance, with the options its class takes."""
        return _construct(PARTITIONERS.get(self.partition), alpha=self.alpha, min_size=self.min_site_samples)

    def source_instance(self, seed: int) -> Any:
        """The pooled data source this section describes (cut to ``train_subset`` training images if set).

        Raises:
            SpecError: the data come as per-site datalists (see :meth:`federated`), not as one pool.
        """
        if self.site is not None:
            raise SpecError("[[data.site]] datalists are already split by site; they have no pooled source")
        source = _construct(
            DATA_SOURCES.get(self.source), path=self.path, seed=seed, n_sites=self.sites,
            train_samples=self.train_samples, val_samples=self.val_samples,
            test_samples=self.test_samples, image_size=self.image_size, spatial_dims=self.spatial_dims,
            datalist=self.datalist, **self._loading(seed),
        )
        return source if self.train_subset is None else TrainSubset(source, self.train_subset, seed)

    def federated(self, seed: int) -> FederatedData:
        """The sites' data: each site's own datalist, or the pooled source split by the partitioner.

        Raises:
            DataError: a data file, datalist or image is missing or malformed (one line naming it).
        """
        if self.site is not None:
            sites = tuple(SiteDatalist(name=s.name, datalist=s.datalist) for s in self.site)
            return federate_site_files(SiteDatalists(sites, **self._loading(seed)))
        return federate(self.source_instance(seed), self.sites, self.partitioner(), seed)

    def site_data(self, name: str, datalist: Path, seed: int, cache_dir: Path | None) -> SiteData:
        """One hospital's data from its own datalist, with this section's preprocessing (a Flower SuperNode's).

        Args:
            name: the site's name (it seeds the split of images the datalist leaves unsplit).
            datalist: the site's datalist.
            seed: the audit's seed.
            cache_dir: where the site caches decoded images, or None not to (the site's choice, not the spec's).

        Raises:
            DataError: the datalist or an image is missing or malformed, or the site has no training images.
        """
        loading = {**self._loading(seed), "cache_dir": cache_dir}
        ((_, splits),) = SiteDatalists((SiteDatalist(name, datalist),), **loading).site_splits()
        return SiteData(name=name, train=splits["train"], test=splits["test"], val=splits["val"])

    def _loading(self, seed: int) -> dict[str, Any]:
        preprocessing = Preprocessing(
            orientation=self.orientation, spacing=tuple(self.spacing) if self.spacing else None, window=self.window,
            percentiles=self.percentiles, size=tuple(self.size) if self.size else None, size_mode=self.size_mode,
        )
        splitter = DatalistSplitter(val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=seed)
        cache_dir = (self.cache_dir or default_cache_dir()) if self.cache else None
        # Every source takes ``masks`` (the task's labels are masks); only files take the rest.
        return {"preprocessing": preprocessing, "splitter": splitter, "cache_dir": cache_dir,
                "masks": TASKS.get(self.task).masks}


class ModelSpec(_Section):
    """``[model]``: the network, by registry name."""

    name: Annotated[str, registered_in(MODELS)] = "cnn"


class FederationSpec(_Section):
    """``[federation]``: strategy, rounds and local training."""

    strategy: Annotated[str, registered_in(STRATEGIES)] = "fedavg"
    rounds: int = Field(20, ge=1, le=100_000)
    local_epochs: int = Field(1, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)
    optimizer: Annotated[str, registered_in(OPTIMIZERS)] = "sgd"
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    clients_per_round: int | None = Field(None, ge=1)
    mu: float = Field(0.01, ge=0)
    server_lr: float = Field(0.01, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)

    @model_validator(mode="after")
    def _options_belong_to_strategy(self) -> FederationSpec:
        stray = sorted(set(STRATEGY_OPTIONS) & self.model_fields_set - _init_fields(STRATEGIES.get(self.strategy)))
        if stray:
            raise ValueError(f"{', '.join(stray)} is not an option of strategy {self.strategy!r}")
        return self

    def strategy_instance(self) -> Any:
        """A fresh strategy object with this section's options."""
        return _construct(STRATEGIES.get(self.strategy), **{name: getattr(self, name) for name in STRATEGY_OPTIONS})

    def local_training(self, task: str) -> LocalTraining:
        """The sites' local training settings, on the loss of ``task`` (the data's)."""
        return LocalTraining(
            epochs=self.local_epochs, batch_size=self.batch_size, lr=self.lr,
            optimizer=self.optimizer, momentum=self.momentum, weight_decay=self.weight_decay, task=task,
        )


class DPSpec(_Section):
    """``dp = { ... }`` of a scenario: which differential privacy, and how much."""

    level: Literal["sample", "client"]
    epsilon: float = Field(gt=0, le=100)
    delta: float = Field(gt=0, lt=1)
    clip: float = Field(1.0, gt=0)
    accountant: Annotated[str, registered_in(ACCOUNTANTS)] = "rdp"
    secure_rng: bool = False
    placement: Literal["central", "distributed"] | None = None
    grad_sample_mode: Literal["hooks", "ghost", "functorch", "ew"] | None = None
    adaptive_quantile: float | None = Field(None, gt=0, lt=1)
    clip_lr: float | None = Field(None, gt=0)
    count_stddev: float | None = Field(None, gt=0)
    min_sites: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _level_options(self) -> DPSpec:
        if self.level == "sample" and self.placement is not None:
            raise ValueError(
                "placement applies to client-level DP only (sample-level noise is added by each site's DP-SGD)"
            )
        adaptive = [f for f in ("adaptive_quantile", "clip_lr", "count_stddev") if getattr(self, f) is not None]
        if self.level == "sample" and adaptive:
            raise ValueError(f"{', '.join(adaptive)}: adaptive clipping applies to client-level DP only")
        if self.adaptive_quantile is None and set(adaptive) - {"adaptive_quantile"}:
            raise ValueError("clip_lr and count_stddev need adaptive_quantile (the target quantile of update norms)")
        if self.level == "client" and self.grad_sample_mode is not None:
            raise ValueError("grad_sample_mode applies to sample-level DP only")
        if self.min_sites is not None and self.placement != "distributed":
            raise ValueError("min_sites applies to client-level DP with placement = 'distributed' only")
        return self

    def mechanism(self) -> Any:
        """The privacy mechanism with this section's options."""
        options = self.model_dump(exclude={"level"}, exclude_none=True)
        return _construct(DP_LEVELS.get(self.level), **options)


class TrainingOverride(_Section):
    """``training = { ... }`` of a scenario: local-training settings that differ from ``[federation]``.

    DP-SGD wants its own learning rate and batch size (clipped gradients are
    small; larger batches dilute the noise), so a DP scenario may set them.
    """

    local_epochs: int | None = Field(None, ge=1, le=10_000)
    batch_size: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)


class SecAggSpec(_Section):
    """``[scenario.secagg]``: SecAgg+'s settings (see :class:`~fedsecure.secure.secagg.SecAggPlusAggregation`).

    ``threshold`` is the collusion bound the report states: the server together with fewer
    than ``threshold`` sites learns only the sum.
    """

    shares: int | None = None
    threshold: int | None = None
    clipping_range: float = 8.0
    quantization_bits: int = 22
    modulus_bits: int = 32


class ScenarioSpec(_Section):
    """``[[scenario]]``: one protection configuration to train, attack and judge."""

    name: SafeName
    protocol: str = "plain"
    ckks_preset: str | None = None
    secagg: SecAggSpec | None = None
    dp: DPSpec | None = None
    training: TrainingOverride | None = None

    def local_training(self, federation: FederationSpec, task: str) -> LocalTraining:
        """The federation's local training (on ``task``'s loss) with this scenario's overrides."""
        base = federation.local_training(task)
        if self.training is None:
            return base
        overrides = self.training.model_dump(exclude_none=True)
        if "local_epochs" in overrides:
            overrides["epochs"] = overrides.pop("local_epochs")
        return dataclasses.replace(base, **overrides)

    @field_validator("protocol")
    @classmethod
    def _known_protocol(cls, value: str) -> str:
        if value not in PROTOCOLS:
            raise ValueError(
                f"protocol {value!r} is not available in this version of fedsecure "
                f"(available: {', '.join(PROTOCOLS.names())})"
            )
        return value

    @field_validator("ckks_preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in CKKS_PRESETS:
            raise ValueError(f"unknown CKKS preset {value!r}; choose one of: {', '.join(CKKS_PRESETS)}")
        return value

    @model_validator(mode="after")
    def _preset_needs_ckks(self) -> ScenarioSpec:
        if self.ckks_preset is not None and self.protocol != "ckks":
            raise ValueError(f"ckks_preset is set but protocol is {self.protocol!r}, not 'ckks'")
        return self

    @model_validator(mode="after")
    def _secagg_settings_fit(self) -> ScenarioSpec:
        if self.secagg is not None and self.protocol != "secagg":
            raise ValueError(f"[scenario.secagg] is set but protocol is {self.protocol!r}, not 'secagg'")
        try:
            self.protocol_instance()
        except FedsecureError as exc:  # the protocol's own checks (e.g. SecAgg+'s threshold), in one line
            raise ValueError(str(exc)) from None
        return self

    def protocol_instance(self) -> Any:
        """The aggregation protocol this scenario names, with its options."""
        options: dict[str, Any] = {"preset": self.ckks_preset} if self.ckks_preset is not None else {}
        if self.secagg is not None:
            options.update(self.secagg.model_dump())
        return _construct(PROTOCOLS.get(self.protocol), **options)

    @model_validator(mode="after")
    def _dp_fits_protocol(self) -> ScenarioSpec:
        if self.dp is not None and self.dp.level == "client" and self.dp.placement is None:
            raise ValueError("client-level dp needs placement = 'central' or 'distributed'")
        if self.dp is not None and self.dp.placement == "central" and self.protocol == "ckks":
            raise ValueError(
                f"central DP noise needs a server that reads the sum, but protocol {self.protocol!r} hides it; "
                "use placement = 'distributed'"
            )
        return self


class ThresholdsSpec(_Section):
    """``[thresholds]``: what a scenario must show to pass the compliance verdict.

    Reconstruction leakage is judged against the attacker's prior image (the
    mean of public images): ``max_reconstruction_psnr_gain`` bounds the median
    PSNR gain over that prior (dB), and ``max_reconstruction_psnr`` fails only
    a reconstruction that exceeds it *and* beats the prior; a reconstruction no
    better than what the attacker knew before has leaked nothing, whatever its
    raw PSNR. ``max_epsilon`` is checked against the worst party (public,
    server, another site); ``max_delta`` defaults to 1 / the number of units the
    guarantee protects (training images for sample-level DP, sites for
    client-level DP). Membership leakage is judged by the upper end of its
    confidence interval.
    """

    max_epsilon: float | None = Field(None, gt=0)
    max_delta: float | None = Field(None, gt=0, lt=1)
    max_membership_tpr_at_0_1_fpr: float | None = Field(None, ge=0, le=1)
    max_reconstruction_psnr: float | None = Field(None, gt=0)
    max_reconstruction_psnr_gain: float | None = Field(None)


def _applicable(
    positions: list[Position] | None, attack: str, not_applicable: dict[Position, str]
) -> list[Position] | None:
    """``positions`` as given, refusing repeats and positions from which ``attack`` has nothing to work on."""
    if positions is None:
        return None
    repeated = sorted({p.value for p in positions if positions.count(p) > 1})
    if repeated:
        raise ValueError(f"positions repeated: {', '.join(repeated)}")
    for position in positions:
        if position in not_applicable:
            raise ValueError(f"{attack} cannot run from the {position.value} position: {not_applicable[position]}")
    return positions


def _positions_on(positions: list[Position] | None, applies: tuple[Position, ...], sites: int) -> list[Position]:
    # Another site's seat needs another site; the default leaves it out of a one-site federation.
    chosen = list(applies) if positions is None else positions
    return [p for p in chosen if p is not Position.CLIENT or sites >= 2 or positions is not None]


class InversionSpec(_Section):
    """``[attacks] inversion = {...}``: gradient inversion from the server's and the other sites' seats.

    The attacked site ``site`` (an index) holds ``batch_size`` of its images in
    the probed round ``round``: ``images / batch_size`` such rounds are probed,
    each with a different batch. From the ``server`` position the attack
    inverts that site's message; from the ``client`` position, site
    ``attacker_site`` (default: the next site) inverts the other sites'
    aggregate, which it computes from the revealed aggregate and its own
    message (under CKKS too). ``positions`` defaults to every position that
    applies. Options the attack does not take are refused by name; those left
    out take the attack's audit defaults (for Inverting Gradients, the
    strongest setting measured to beat the prior: see
    ``attacks.inversion.InvertingGradients.audit_defaults``).
    """

    method: Annotated[str, registered_in(INVERSION_ATTACKS)] = "inverting_gradients"
    positions: list[Position] | None = Field(None, min_length=1)
    images: int = Field(8, ge=1, le=1024)
    batch_size: int = Field(1, ge=1, le=256)
    site: int = Field(0, ge=0)
    attacker_site: int | None = Field(None, ge=0)
    round: int = Field(1, ge=1)
    iterations: int | None = Field(None, ge=1, le=100_000)
    restarts: int | None = Field(None, ge=1, le=64)
    lr: float | None = Field(None, gt=0)
    tv: float | None = Field(None, ge=0)
    init: Literal["random", "prior"] | None = None
    subspace: int | None = Field(None, ge=0)
    prior_weight: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0)

    APPLIES: ClassVar[tuple[Position, ...]] = (Position.SERVER, Position.CLIENT)
    NOT_APPLICABLE: ClassVar[dict[Position, str]] = {
        Position.EXTERNAL: "the released model carries no update to invert",
    }

    @field_validator("positions")
    @classmethod
    def _positions_apply(cls, value: list[Position] | None) -> list[Position] | None:
        return _applicable(value, "inversion", cls.NOT_APPLICABLE)

    def positions_on(self, sites: int) -> list[Position]:
        """The positions this attack runs from, on a federation of ``sites`` sites."""
        return _positions_on(self.positions, self.APPLIES, sites)

    def attacker_on(self, sites: int) -> int:
        """The site whose seat the client-position attack takes."""
        return self.attacker_site if self.attacker_site is not None else (self.site + 1) % sites

    @model_validator(mode="after")
    def _whole_batches(self) -> InversionSpec:
        if self.images % self.batch_size:
            raise ValueError(f"images ({self.images}) must be a multiple of batch_size ({self.batch_size})")
        unknown = set(self._options()) - _init_fields(INVERSION_ATTACKS.get(self.method))
        if unknown:
            raise ValueError(f"inversion method {self.method!r} takes no option {', '.join(sorted(unknown))}")
        return self

    def _options(self) -> dict[str, Any]:
        return self.model_dump(
            exclude={"method", "positions", "images", "batch_size", "site", "attacker_site", "round"},
            exclude_none=True,
        )

    def attack(self, seed: int) -> Any:
        """The attack with this section's options over its audit defaults (its seed derived from the audit's)."""
        attack = INVERSION_ATTACKS.get(self.method)
        options = {"seed": seed, **attack.audit_defaults, **self._options()}
        return _construct(attack, **options)


class MembershipSpec(_Section):
    """``[attacks] membership = {...}``: membership inference on the released (final global) model.

    Members are the sites' training images, non-members the sites' held-out
    test images (same sites, same scanners). ``shadow_models`` reference
    federations are trained with the scenario's own pipeline, each on a random
    half of those candidates. The loss attack always runs beside ``method`` as
    the reference point. ``canaries > 0`` adds a one-run audit (Steinke et al.
    2023): that many mislabelled held-out images, each inserted with
    probability 1/2, in one more training run; ``canary_guesses`` of them
    are guessed (default: a fifth).
    """

    method: Annotated[str, registered_in(MEMBERSHIP_ATTACKS)] = "lira"
    positions: list[Position] | None = Field(None, min_length=1)
    attacker_site: int = Field(0, ge=0)
    shadow_models: int = Field(16, ge=2, le=256)
    online: bool | None = None
    per_example_variance: bool | None = None
    offline_a: float | None = Field(None, ge=0, le=1)
    gamma: float | None = Field(None, gt=0)
    weight_decay: float | None = Field(None, ge=0)
    canaries: int = Field(0, ge=0, le=100_000)
    canary_guesses: int | None = Field(None, ge=2)
    confidence: float = Field(0.95, gt=0.5, lt=1)

    APPLIES: ClassVar[tuple[Position, ...]] = (Position.EXTERNAL, Position.SERVER, Position.CLIENT)

    @field_validator("positions")
    @classmethod
    def _positions_apply(cls, value: list[Position] | None) -> list[Position] | None:
        return _applicable(value, "membership", {})

    def positions_on(self, sites: int) -> list[Position]:
        """The positions this attack runs from, on a federation of ``sites`` sites."""
        return _positions_on(self.positions, self.APPLIES, sites)

    @model_validator(mode="after")
    def _options_fit(self) -> MembershipSpec:
        unknown = set(self.options()) - _init_fields(MEMBERSHIP_ATTACKS.get(self.method))
        if unknown:
            raise ValueError(f"membership method {self.method!r} takes no option {', '.join(sorted(unknown))}")
        if self.canary_guesses is not None and self.canary_guesses > self.canaries:
            raise ValueError(f"canary_guesses ({self.canary_guesses}) exceeds canaries ({self.canaries})")
        return self

    def options(self) -> dict[str, Any]:
        """The attack's own options."""
        return self.model_dump(
            include={"online", "per_example_variance", "offline_a", "gamma", "weight_decay"}, exclude_none=True
        )

    def attack(self) -> Any:
        """The attack with this section's options."""
        return _construct(MEMBERSHIP_ATTACKS.get(self.method), **self.options())


class MechanismSpec(_Section):
    """``[attacks] mechanism = {...}``: does each DP scenario's privacy code do what its accountant assumes?

    The server-seat auditor runs site ``site``'s real privacy pipeline for one
    round (DP-SGD's Opacus loader, clipping and noise on gradient canaries;
    client-level clipping and noise shares on canary updates) ``trials`` times
    without and with a canary, and bounds the noise it really adds (see
    ``fedsecure.audit.mechanism``). Default trials: 20000 for sample-level DP
    (a few seconds), 200000 for client-level DP (its per-round audit must
    resolve a 10% overspend).

    ``canary_clients > 0`` (client-level DP scenarios) also runs the scenario's
    federation once more with that many canary clients, each sending a random
    direction of the clip's norm every round, and estimates epsilon from the
    released model against ``unseen_canaries`` directions that took no part
    (Andrew et al. 2024, "One-shot Empirical Privacy Estimation").
    """

    trials: int | None = Field(None, ge=1000, le=10_000_000)
    site: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    canary_clients: int = Field(0, ge=0, le=10_000)
    unseen_canaries: int = Field(1000, ge=2, le=100_000)


class AttacksSpec(_Section):
    """``[attacks]``: which attacks the audit runs against every scenario."""

    inversion: InversionSpec | None = None
    membership: MembershipSpec | None = None
    mechanism: MechanismSpec | None = None


class StudySpec(_Section):
    """``[study]``: the survey's comparison of training methods on the spec's data and model (no protection).

    Every method trains with the federation's rounds, local epochs, batch size and learning
    rate, ``seeds`` times (the seed sets model initialisation and batch order; the sites'
    split stays the spec's), and is judged on each site's test share.
    """

    seeds: int = Field(3, ge=1, le=100)
    methods: list[Annotated[str, registered_in(STUDY_METHODS)]] = Field(
        default_factory=lambda: list(STUDY_METHODS), min_length=1
    )
    mu: float = Field(0.01, ge=0)
    confidence: float = Field(0.95, gt=0.5, lt=1)

    @field_validator("methods")
    @classmethod
    def _unique(cls, methods: list[str]) -> list[str]:
        if len(set(methods)) != len(methods):
            raise ValueError("names a method twice")
        return methods


class AuditSpec(_Section):
    """A whole audit: data, model, federation, scenarios, attacks, thresholds."""

    name: SafeName
    seed: int = Field(0, ge=0, lt=2**63)
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    federation: FederationSpec = FederationSpec()
    scenario: list[ScenarioSpec] = Field(min_length=1)
    attacks: AttacksSpec = AttacksSpec()
    thresholds: ThresholdsSpec | None = None
    study: StudySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _expand_sweeps(cls, raw: Any) -> Any:
        # A dp option given as a list is a sweep: one scenario per value, named after it (e.g. dp-sample-eps4).
        if not isinstance(raw, dict) or not isinstance(raw.get("scenario"), list):
            return raw
        expanded: list[Any] = []
        for i, scenario in enumerate(raw["scenario"]):
            dp = scenario.get("dp") if isinstance(scenario, dict) else None
            swept = [key for key in SWEEPS if isinstance(dp, dict) and isinstance(dp.get(key), list)]
            # Without a name (refused below, by the field) a sweep has nothing to name its scenarios after.
            if not swept or not isinstance(dp, dict) or not isinstance(scenario.get("name"), str):
                expanded.append(scenario)
                continue
            if len(swept) > 1:
                raise ValueError(f"scenario[{i}].dp: sweep one option at a time, not {' and '.join(swept)}")
            key, values = swept[0], dp[swept[0]]
            if not values or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                raise ValueError(f"scenario[{i}].dp.{key}: a sweep is a non-empty list of numbers")
            if len(set(values)) != len(values):
                raise ValueError(f"scenario[{i}].dp.{key}: the sweep repeats a value")
            for value in values:
                expanded.append({**scenario, "name": f"{scenario['name']}-{SWEEPS[key]}{value:.12g}",
                                 "dp": {**dp, key: value}})
        return {**raw, "scenario": expanded}

    def scenario_named(self, name: str) -> ScenarioSpec:
        """The scenario called ``name``.

        Raises:
            SpecError: the spec has none (the message lists the ones it has).
        """
        for scenario in self.scenario:
            if scenario.name == name:
                return scenario
        raise SpecError(f"no such scenario in the spec; it has {', '.join(s.name for s in self.scenario)}")

    @model_validator(mode="after")
    def _consistent(self) -> AuditSpec:
        names = [s.name for s in self.scenario]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"scenario names must be unique; repeated: {', '.join(duplicates)}")
        per_round = self.federation.clients_per_round
        if per_round is not None and per_round > self.data.sites:
            raise ValueError(f"federation.clients_per_round ({per_round}) exceeds data.sites ({self.data.sites})")
        for i, scenario in enumerate(self.scenario):
            try:
                scenario.protocol_instance().check_federation(self.data.sites, per_round)
            except FedsecureError as exc:
                raise ValueError(f"scenario[{i}] {scenario.name!r}: {exc}") from None
            min_sites = scenario.dp.min_sites if scenario.dp is not None else None
            if min_sites is not None and min_sites > self.data.sites:
                raise ValueError(
                    f"scenario[{i}] {scenario.name!r}: dp.min_sites ({min_sites}) exceeds data.sites "
                    f"({self.data.sites})"
                )
        sites = self.data.sites
        attacks = {name: getattr(self.attacks, name) for name in ("inversion", "membership", "mechanism")}
        for name, field_name in (("inversion", "site"), ("inversion", "attacker_site"),
                                 ("membership", "attacker_site"), ("mechanism", "site")):
            index = getattr(attacks[name], field_name, None)
            if index is not None and index >= sites:
                raise ValueError(
                    f"attacks.{name}.{field_name} ({index}) must be a site index below data.sites ({sites})"
                )
        for name in ("inversion", "membership"):
            if attacks[name] is not None and Position.CLIENT in attacks[name].positions_on(sites) and sites < 2:
                raise ValueError(f"attacks.{name}.positions: the client position needs another site (data.sites >= 2)")
        inversion = self.attacks.inversion
        if inversion is not None:
            if inversion.round > self.federation.rounds:
                raise ValueError(f"attacks.inversion.round ({inversion.round}) exceeds federation.rounds "
                                 f"({self.federation.rounds})")
            if Position.CLIENT in inversion.positions_on(sites) and inversion.attacker_on(sites) == inversion.site:
                raise ValueError(f"attacks.inversion.attacker_site ({inversion.site}) is the attacked site; "
                                 "the client position is another site")
        mechanism = self.attacks.mechanism
        if mechanism is not None and mechanism.canary_clients and not any(
            s.dp is not None and s.dp.level == "client" for s in self.scenario
        ):
            raise ValueError("attacks.mechanism.canary_clients needs a scenario with client-level DP (dp.level = "
                             "\"client\"): canary clients stand for whole sites")
        if mechanism is not None and mechanism.canary_clients and STRATEGIES.get(
            self.federation.strategy
        )().message_length(1) != 1:
            raise ValueError(
                f"attacks.mechanism.canary_clients cannot audit strategy {self.federation.strategy!r}: its message "
                "carries more than the model update, and the one-shot estimate reads canaries off the released model "
                "alone"
            )
        return self


@dataclasses.dataclass(frozen=True)
class LoadedSpec:
    """A validated spec with the text it came from (for the report's manifest)."""

    spec: AuditSpec
    text: str
    origin: str

    @property
    def sha256(self) -> str:
        """sha256 of the spec's text."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def parse_spec(text: str, origin: str, base_dir: Path | None = None, data_path: Path | None = None) -> LoadedSpec:
    """Validate spec ``text``.

    Args:
        text: the TOML text.
        origin: where it came from, for error messages (a path or "<default>").
        base_dir: relative ``data.path`` values resolve against this directory
            (the spec file's directory), so a spec works from any working directory.
        data_path: overrides ``data.path`` (the CLI's ``--data``); used as given.

    Raises:
        SpecError: one line naming the field(s) and the problem(s).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{origin}: invalid TOML: {exc}") from None
    if data_path is not None:
        raw.setdefault("data", {})
        if isinstance(raw["data"], dict):
            raw["data"]["path"] = str(data_path)
    if base_dir is not None and isinstance(raw.get("data"), dict):
        _resolve_data_paths(raw["data"], base_dir, skip_path=data_path is not None)
    try:
        spec = AuditSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"{origin}: {format_validation_error(exc)}") from None
    return LoadedSpec(spec=spec, text=text, origin=origin)


def _resolve_data_paths(data: dict[str, Any], base_dir: Path, skip_path: bool) -> None:
    """Relative file names in ``[data]`` resolve against the spec's folder (``--data`` is used as given)."""

    def resolve(value: object) -> object:
        if not isinstance(value, str):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base_dir / path)

    for key in ("datalist", "cache_dir") + (() if skip_path else ("path",)):
        if key in data:
            data[key] = resolve(data[key])
    for site in data.get("site") or []:
        if isinstance(site, dict) and "datalist" in site:
            site["datalist"] = resolve(site["datalist"])


def load_spec(path: Path | None = None, data_path: Path | None = None) -> LoadedSpec:
    """Read and validate the spec at ``path`` (the embedded default when None)."""
    if path is None:
        return parse_spec(DEFAULT_SPEC.read_text(), "<default>", data_path=data_path)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec ({exc})") from None
    return parse_spec(text, str(path), base_dir=path.parent.resolve(), data_path=data_path)


def format_validation_error(exc: ValidationError) -> str:
    """All of pydantic's errors on one line, each as ``field.path: message``."""
    parts = []
    for error in exc.errors():
        location = ""
        for item in error["loc"]:
            location += f"[{item}]" if isinstance(item, int) else (f".{item}" if location else str(item))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)
