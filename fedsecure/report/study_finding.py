"""The survey's study as report.json holds it (``study``, schema 1.8): methods, their intervals, paired tests."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StudySiteValue:
    """One method's metric on one site's test share.

    Attributes:
        site: the site whose test share judged it.
        mean: the mean over seeds (None where no seed's value is defined, e.g. AUC on one class).
        per_seed: each seed's value, in seed order (None: undefined).
    """

    site: str
    mean: float | None
    per_seed: list[float | None]


@dataclass(frozen=True)
class StudyMethodFinding:
    """One training method of the study.

    Attributes:
        name: ``single``, ``cross``, ``mix``, ``fedavg``, ``fedsgd`` or ``fedprox``.
        description: what it trains and what judges it.
        mean: the pooled metric (every site's test share pooled), mean over seeds.
        interval: its two-sided t interval over seeds at the study's confidence (None with one seed).
        per_seed: the pooled metric of each seed.
        per_site: the metric on each site's test share.
        train_seconds: training time summed over seeds.
        site_mean: the mean over sites of the per-site metric (the sites where it is defined), mean over
            seeds: the comparison that does not pool several models' scores (single, cross).
    """

    name: str
    description: str
    mean: float | None
    interval: list[float] | None
    per_seed: list[float | None]
    per_site: list[StudySiteValue]
    train_seconds: float
    site_mean: float | None = None


@dataclass(frozen=True)
class StudyComparison:
    """A paired test of one of the survey's findings: is ``better`` above ``worse``?

    Attributes:
        better: the method the finding puts first.
        worse: the method it puts second.
        test: the test, named.
        n_pairs: (seed, site) pairs where both methods' per-site values are defined.
        mean_difference: the mean of better - worse over the pairs.
        statistic: the test statistic (None: too few pairs, or every difference zero).
        p_value: two-sided p-value (None as for the statistic).
        holds: whether the mean difference is positive, the survey's direction (None without pairs); says
            nothing of significance.
    """

    better: str
    worse: str
    test: str
    n_pairs: int
    mean_difference: float | None
    statistic: float | None
    p_value: float | None
    holds: bool | None


@dataclass(frozen=True)
class StudyFinding:
    """The study: every method on every site's test share, over seeds, with the survey's findings tested.

    Attributes:
        metric: the utility field judged (``auc``, ``dice``).
        seeds: the repetitions' seeds (model initialisation and batch order; the sites' split is the spec's).
        confidence: the intervals' level.
        methods: each method, in the survey's order.
        comparisons: the survey's findings, each a paired test over (seed, site).
        wall_seconds: the study's compute time.
        notes: what the reader needs to read the table right.
    """

    metric: str
    seeds: list[int]
    confidence: float
    methods: list[StudyMethodFinding]
    comparisons: list[StudyComparison]
    wall_seconds: float
    notes: list[str] = field(default_factory=list)

    def method(self, name: str) -> StudyMethodFinding:
        """The method called ``name``."""
        return next(m for m in self.methods if m.name == name)
