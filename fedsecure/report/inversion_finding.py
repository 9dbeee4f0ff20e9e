"""A gradient-inversion finding, and how the report shows it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from typing_extensions import Self, override

from fedsecure.report.attack_finding import AttackFinding, AttackTable, Check, ImageGrid
from fedsecure.report.formatting import number, signed

if TYPE_CHECKING:
    from fedsecure.config.spec import ThresholdsSpec
    from fedsecure.report.scenario import ScenarioFinding


@dataclass(frozen=True)
class ImageScores:
    """One attacked image: its reconstruction's PSNR and SSIM, and the attacker's prior image's."""

    psnr: float
    ssim: float
    prior_psnr: float
    prior_ssim: float


@dataclass(frozen=True)
class InversionFinding(AttackFinding):
    """A gradient-inversion attack from one threat position, scored against the truth and the prior.

    ``prior_*`` are the same metrics for the attacker's prior image (the mean
    of public images); the gain over the prior is the leakage. ``per_image``
    scores each attacked image. ``figure`` is the image grid (true /
    reconstructed / prior), relative to the report. On a segmentation task the
    labels are masks, optimized jointly with the images (never given to the
    attacker): ``label_accuracy`` is then the fraction of pixels whose class was
    recovered (mostly background), ``mask_dice`` the recovered masks' mean Dice and
    ``prior_mask_dice`` that of the attacker's prior mask (the public masks' per-pixel
    majority): the gain over it is what the update leaked of the anatomy.
    """

    site: str | None = None
    images: int = 0
    batch_size: int = 0
    round: int = 1
    attacker_site: str | None = None
    psnr_median: float | None = None
    psnr_worst_case: float | None = None
    ssim_median: float | None = None
    label_accuracy: float | None = None
    mask_dice: float | None = None
    prior_mask_dice: float | None = None
    prior_psnr_median: float | None = None
    prior_ssim_median: float | None = None
    psnr_gain_median: float | None = None
    relative_leakage: float | None = None
    per_image: list[ImageScores] = field(default_factory=list)
    seconds: float | None = None
    figure: str | None = None
    assumptions: list[str] = field(default_factory=list)
    prior: str | None = None

    thresholds: ClassVar[tuple[str, ...]] = ("max_reconstruction_psnr", "max_reconstruction_psnr_gain")
    frontier_rank: ClassVar[int] = 1
    seat_measure: ClassVar[str] = "inversion: worst gain over the prior"
    applies_at: ClassVar[tuple[str, ...]] = ("server", "client")  # the released model carries no update

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "scenario", "attack", "position", "status", "median PSNR", "prior PSNR", "gain (dB)", "median SSIM",
        "prior SSIM", "labels",
    )

    @override
    def success(self) -> str:
        return f"{signed(self.psnr_gain_median)} dB over prior"

    @override
    def leakage(self) -> str:
        labels = None if self.label_accuracy is None else 100 * self.label_accuracy
        seat = f" (as {self.attacker_site}, from the other sites' aggregate)" if self.attacker_site else ""
        return (
            f"Gradient inversion, {self.where}{seat}, round {self.round}, on {self.images} images of {self.site}: "
            "median PSNR "
            f"{number(self.psnr_median, 1)} dB against {number(self.prior_psnr_median, 1)} dB for the "
            f"attacker's prior image (gain {signed(self.psnr_gain_median)} dB); labels recovered "
            f"{number(labels, 0)}%{self._mask_text()}."
        )

    def _mask_text(self) -> str:
        if self.mask_dice is None:
            return ""
        return (f" of pixels, mostly background (masks recovered jointly, not given: mean Dice "
                f"{number(self.mask_dice)} against {number(self.prior_mask_dice)} for the attacker's prior mask, "
                "the public masks' per-pixel majority)")

    @override
    def table_row(self, scenario: ScenarioFinding) -> tuple[str, ...]:
        return (
            scenario.name, self.method, self.position, self.status_text, number(self.psnr_median, 1),
            number(self.prior_psnr_median, 1), signed(self.psnr_gain_median), number(self.ssim_median),
            number(self.prior_ssim_median), number(self.label_accuracy, 2),
        )

    @override
    @classmethod
    def table(cls, rows: Sequence[tuple[ScenarioFinding, Self]]) -> AttackTable:
        return AttackTable(
            title="Gradient inversion",
            caption="Gradient inversion, judged against the attacker's prior image (the mean public image):",
            note="Judged against the attacker's prior image (the mean public image): the gain over the prior is "
                 "the leakage.",
            columns=cls.COLUMNS,
            rows=[finding.table_row(scenario) for scenario, finding in rows],
            numbers_from=4,
        )

    @override
    @classmethod
    def limits(cls, found: Sequence[Self]) -> list[str]:
        if not any(finding.measured for finding in found):
            return ["Reconstruction of training images was not measured."]
        ran = next((finding for finding in found if finding.status == "ok"), None)
        if ran is None:
            return []
        lines = [
            f"Inversion was run on {ran.images} images of one site, {ran.batch_size} image(s) per update, in round "
            f"{ran.round}; larger batches and more local steps make it harder, so the result holds for this setting."
        ]
        priors = sorted({finding.prior for finding in found if finding.status == "ok" and finding.prior})
        lines += [f"The inversion's image prior: {prior}." for prior in priors]
        return lines

    @override
    def judge(self, thresholds: ThresholdsSpec) -> list[Check]:
        """Reconstruction leakage, judged by the gain over the attacker's prior image."""
        if thresholds.max_reconstruction_psnr is None and thresholds.max_reconstruction_psnr_gain is None:
            return []
        if self.status == "no_access":
            return [Check(True, f"{self.where}: no access ({self.reason})")]
        gain, psnr, prior = self.psnr_gain_median, self.psnr_median, self.prior_psnr_median
        assert gain is not None and psnr is not None and prior is not None  # an attack that ran has its metrics
        if not all(math.isfinite(x) for x in (gain, psnr, prior)):  # NaN compares false: it would pass every bound
            return [Check(False, f"{self.where}: its PSNR is not a number, so the reconstruction thresholds "
                                 "cannot be shown to hold")]
        facts = f"median PSNR {psnr:.1f} dB against the prior image's {prior:.1f} dB (gain {gain:+.1f} dB)"
        checks = []
        if thresholds.max_reconstruction_psnr_gain is not None:
            limit = thresholds.max_reconstruction_psnr_gain
            if gain > limit:
                checks.append(Check(False, f"{self.where}: {facts} exceeds max_reconstruction_psnr_gain {limit:g} dB"))
            else:
                checks.append(Check(True, f"{self.where}: {facts} is within max_reconstruction_psnr_gain {limit:g} dB"))
        if thresholds.max_reconstruction_psnr is not None:
            limit = thresholds.max_reconstruction_psnr
            if psnr > limit and gain > 0:
                checks.append(Check(
                    False, f"{self.where}: {facts} exceeds max_reconstruction_psnr {limit:g} dB and beats the prior"
                ))
            elif psnr > limit:
                checks.append(Check(
                    True,
                    f"{self.where}: {facts}; above max_reconstruction_psnr {limit:g} dB but no better than the prior, "
                    "so nothing beyond the attacker's prior knowledge was recovered",
                ))
            else:
                checks.append(Check(True, f"{self.where}: {facts} is within max_reconstruction_psnr {limit:g} dB"))
        return checks

    @override
    def frontier_axis(self) -> str:
        return "reconstruction PSNR gain over the prior image (dB)"

    @override
    def frontier_value(self) -> float | None:
        return self.psnr_gain_median if self.status == "ok" else None

    @override
    def image_grid(self) -> ImageGrid | None:
        if not self.figure:
            return None
        return ImageGrid(
            file=self.figure, title="Reconstructions",
            caption=f"{self.where}. Rows: the true images, the reconstructions, the attacker's prior image.",
        )
