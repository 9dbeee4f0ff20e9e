"""What a model is worth: test utility of a scenario's model and of the two baselines."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SiteUtility:
    """A model's utility on one site's local test set (the report's record; the engine has its own)."""

    site: str
    n_train: int
    auc: float | None
    accuracy: float
    n_test: int
    dice: float | None = field(default=None, kw_only=True)
    dice_per_class: list[float | None] | None = field(default=None, kw_only=True)
    hd95: float | None = field(default=None, kw_only=True)
    missed_structures: int | None = field(default=None, kw_only=True)
    spurious_structures: int | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class SiteModelUtility:
    """One site's own model (local-only baseline) on the whole test set."""

    site: str
    auc: float | None
    accuracy: float
    dice: float | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class UtilityFinding:
    """A model's test utility: whole test set and each site's local test set.

    Segmentation adds ``dice`` (mean over the foreground classes), ``dice_per_class``,
    ``hd95`` (voxels; over the structures both truth and prediction hold),
    ``missed_structures`` (structures the truth holds and the prediction misses),
    ``spurious_structures`` (structures the prediction holds and the truth lacks) and
    ``examples``, the figure of example segmentations (image, truth, prediction), relative to the report.
    """

    auc: float | None
    accuracy: float
    per_site: list[SiteUtility]
    dice: float | None = field(default=None, kw_only=True)
    dice_per_class: list[float | None] | None = field(default=None, kw_only=True)
    hd95: float | None = field(default=None, kw_only=True)
    missed_structures: int | None = field(default=None, kw_only=True)
    spurious_structures: int | None = field(default=None, kw_only=True)
    examples: str | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class CentralizedFinding(UtilityFinding):
    """The centralized baseline (all data pooled: the upper bound) and its training time."""

    train_seconds: float


@dataclass(frozen=True)
class LocalOnlyFinding(UtilityFinding):
    """Local-only baseline: ``auc``/``accuracy`` are the mean of the sites' own models on the whole test set."""

    per_site_on_test: list[SiteModelUtility]
    train_seconds: float


@dataclass(frozen=True)
class Baselines:
    """The two reference points every scenario is read against, trained with the federation's budget."""

    centralized: CentralizedFinding
    local_only: LocalOnlyFinding

    @property
    def train_seconds(self) -> float:
        """Both baselines' training time."""
        return self.centralized.train_seconds + self.local_only.train_seconds
