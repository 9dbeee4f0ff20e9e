"""What every attack finding has, and what each kind of attack must say about itself.

The renderers never ask which attack a finding is: each kind (the classes
``attack_kinds.ATTACK_FINDINGS`` maps report.json's ``"attack"`` names to)
gives its own headline, table, compliance lines, limits, figures and verdict,
so a new kind of attack is a new class and one more entry in that mapping.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from typing_extensions import Self

from fedsecure.positions import Position

if TYPE_CHECKING:
    from fedsecure.config.spec import ThresholdsSpec
    from fedsecure.report.scenario import ScenarioFinding

# Statuses of a finding that count as measured: "no_access" is a measurement (that position holds nothing the
# attack can use, e.g. CKKS ciphertexts), "skipped" is not.
MEASURED = ("ok", "no_access")


@dataclass(frozen=True)
class AttackTable:
    """One kind of attack's table in the report: a heading, the text that introduces it, its rows.

    ``caption`` introduces the table in Markdown (one line ending in a colon),
    ``note`` in HTML (a paragraph under the ``title`` heading). Cells from
    ``numbers_from`` on are figures (right-aligned in HTML).
    """

    title: str
    caption: str
    note: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    numbers_from: int


@dataclass(frozen=True)
class Check:
    """One threshold checked against one finding: whether it held, and why, in one sentence."""

    held: bool
    reason: str


@dataclass(frozen=True)
class RocCurve:
    """An attack's ROC curve, with what a log-log plot of it needs: its AUC and its negatives' count."""

    fpr: list[float]
    tpr: list[float]
    auc: float | None
    negatives: int


@dataclass(frozen=True)
class ImageGrid:
    """An attack's picture of what it recovered: a PNG file beside report.json, its title, what its rows show."""

    file: str
    title: str
    caption: str


@dataclass(frozen=True)
class AttackFinding(ABC):
    """An attack from one threat position, scored against the truth.

    ``status`` is "ok" (the attack ran), "no_access" (its position holds
    nothing it can attack, e.g. CKKS ciphertexts) or "skipped" (it could not
    run; ``reason`` says why). Metrics are None unless the status is "ok".
    """

    method: str
    position: str
    status: str
    reason: str | None = None

    # report.json names each finding's kind under "attack" (see fedsecure.report.json_form).
    json_tag: ClassVar[str] = "attack"
    # The spec's [thresholds] this kind of attack answers for, in ThresholdsSpec's field names.
    thresholds: ClassVar[tuple[str, ...]] = ()
    # Which kind of attack places the scenarios on the frontier's leakage axis: the lowest rank measured.
    frontier_rank: ClassVar[int] = 100
    # The leakage-by-seat table's column for this kind (its worst finding at each seat, by frontier value).
    seat_measure: ClassVar[str] = "worst attack success"
    # The seats (position values) this kind of attack can run from; at the others it "does not apply".
    applies_at: ClassVar[tuple[str, ...]] = ("external", "server", "client")

    @classmethod
    def json_variants(cls) -> Mapping[str, type[AttackFinding]]:
        """The kinds of attack finding, by their name in report.json."""
        # Imported here: the mapping imports every kind, and every kind imports this base.
        from fedsecure.report.attack_kinds import ATTACK_FINDINGS

        return ATTACK_FINDINGS

    @classmethod
    def kind(cls) -> str:
        """This kind's name in report.json ("attack")."""
        return next(name for name, variant in cls.json_variants().items() if variant is cls)

    @property
    def measured(self) -> bool:
        """Whether the attack's position was measured (it ran, or it has nothing to attack)."""
        return self.status in MEASURED

    @property
    def status_text(self) -> str:
        """The status in words ("ok", "no access", "skipped")."""
        return self.status.replace("_", " ")

    @property
    def where(self) -> str:
        """The attack and its seat, as the compliance section and the verdict name it."""
        return f"{self.method} from {self.seat_words} ({self.position} position)"

    @property
    def seat_words(self) -> str:
        """The attacker's seat in words ("the aggregation server")."""
        try:
            return Position(self.position).in_words
        except ValueError:  # a position this fedsecure does not know (a newer report)
            return f"the {self.position} position"

    def headline(self) -> str:
        """The summary table's "attack success" for this attack."""
        if self.status != "ok":
            return f"{self.method}: {self.status_text}"
        return f"{self.method}: {self.success()}"

    def leakage_statement(self) -> str:
        """The compliance section's line on what this attack recovered."""
        if self.status == "no_access":
            return f"{self.where}: no access ({self.reason})."
        if self.status != "ok":
            return f"{self.where}: not run ({self.reason})."
        return self.leakage()

    @abstractmethod
    def success(self) -> str:
        """The attack's headline figure, once it ran ("+14.8 dB over prior")."""

    @abstractmethod
    def leakage(self) -> str:
        """What the attack recovered, in one sentence, once it ran."""

    @abstractmethod
    def table_row(self, scenario: ScenarioFinding) -> tuple[str, ...]:
        """This finding's row in its kind's table."""

    @classmethod
    @abstractmethod
    def table(cls, rows: Sequence[tuple[ScenarioFinding, Self]]) -> AttackTable:
        """The table of this kind's findings (each with its scenario), in report order; ``rows`` is not empty."""

    @classmethod
    @abstractmethod
    def limits(cls, found: Sequence[Self]) -> list[str]:
        """The limits of one scenario's evidence from this kind of attack (``found`` may be empty)."""

    @abstractmethod
    def judge(self, thresholds: ThresholdsSpec) -> list[Check]:
        """Each of the spec's thresholds this measured finding answers for: whether it held, and why."""

    def frontier_axis(self) -> str:
        """The frontier's leakage axis when this kind of attack is plotted on it."""
        return "attack success"

    def frontier_value(self) -> float | None:
        """Where this finding places its scenario on that axis (None: not plotted)."""
        return None

    def roc_curve(self) -> RocCurve | None:
        """The attack's ROC curve where it has one."""
        return None

    def image_grid(self) -> ImageGrid | None:
        """The attack's image figure, where it has one."""
        return None
