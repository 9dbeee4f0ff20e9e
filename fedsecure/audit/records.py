"""The engine's results as the report records them.

The report package reads findings only and imports no engine, so it has its
own records of what the engine computes (per-site utility, the guarantee
against each party); this is where the audit copies one into the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedsecure.fl.baselines import CentralizedResult, LocalOnlyResult
from fedsecure.fl.evaluation import Utility
from fedsecure.fl.privacy_hooks import PartyGuarantee
from fedsecure.fl.server import SiteUtility as EngineSiteUtility
from fedsecure.report.findings import (
    Baselines,
    CentralizedFinding,
    LocalOnlyFinding,
    PartyGuaranteeFinding,
    SiteModelUtility,
    SiteUtility,
    UtilityFinding,
)


def site_utilities(per_site: Sequence[EngineSiteUtility]) -> list[SiteUtility]:
    """Each site's utility, as the report records it."""
    return [
        SiteUtility(site=u.site, n_train=u.n_train, auc=u.auc, accuracy=u.accuracy, n_test=u.n_test, dice=u.dice,
                    dice_per_class=_listed(u.dice_per_class), hd95=u.hd95, missed_structures=u.missed_structures,
                    spurious_structures=u.spurious_structures)
        for u in per_site
    ]


def utility_finding(
    pooled: Utility, per_site: Sequence[EngineSiteUtility], examples: str | None = None
) -> UtilityFinding:
    """A model's utility on the whole test set and each site's, as the report records it."""
    return UtilityFinding(
        pooled.auc, pooled.accuracy, site_utilities(per_site), dice=pooled.dice,
        dice_per_class=_listed(pooled.dice_per_class), hd95=pooled.hd95, missed_structures=pooled.missed_structures,
        spurious_structures=pooled.spurious_structures,
        examples=examples,
    )


def _listed(values: Sequence[float | None] | None) -> list[float | None] | None:
    return None if values is None else list(values)


def party_guarantees(by_adversary: Sequence[PartyGuarantee]) -> dict[str, PartyGuaranteeFinding]:
    """The guarantee against each party, by party."""
    return {
        g.party: PartyGuaranteeFinding(
            epsilon=g.epsilon, noise_multiplier=g.noise_multiplier, sample_rate=g.sample_rate, steps=g.steps,
            accounting=g.accounting, sees=g.sees, assumptions=list(g.assumptions),
        )
        for g in by_adversary
    }


def baselines(centralized: CentralizedResult, local_only: LocalOnlyResult) -> Baselines:
    """The two baselines' findings."""
    return Baselines(
        centralized=CentralizedFinding(
            auc=centralized.utility.auc, accuracy=centralized.utility.accuracy,
            per_site=site_utilities(centralized.per_site), train_seconds=centralized.train_seconds,
            dice=centralized.utility.dice, dice_per_class=_listed(centralized.utility.dice_per_class),
            hd95=centralized.utility.hd95, missed_structures=centralized.utility.missed_structures,
            spurious_structures=centralized.utility.spurious_structures,
        ),
        local_only=LocalOnlyFinding(
            auc=local_only.auc, accuracy=local_only.accuracy, per_site=site_utilities(local_only.per_site),
            dice=local_only.dice,
            per_site_on_test=[
                SiteModelUtility(site=s.site, auc=u.auc, accuracy=u.accuracy, dice=u.dice)
                for s, u in zip(local_only.per_site, local_only.per_site_on_test, strict=True)
            ],
            train_seconds=local_only.train_seconds,
        ),
    )
