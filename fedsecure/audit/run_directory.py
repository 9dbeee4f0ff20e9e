"""An audit's output directory: finished stages kept atomically, so that an interrupted audit resumes.

Layout::

    DIR/report.json, report.md, report.html    written when every stage is done
    DIR/stages/run.json                          which run this directory belongs to
    DIR/stages/<stage>.json                      one finished stage (baselines, a scenario)
    DIR/figures/, DIR/cache/                     figures and reference-model caches

A stage file is written with one atomic rename, after the stage's work is
complete: a killed process leaves whole stages or none, never half of one.
Every random stream derives from the spec's seed, so a stage run after a
resume gives the numbers it would have given in the uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedsecure.errors import OutputError
from fedsecure.report.output import REPORT_JSON, STAGES, write_json

RUN_FILE = "run.json"
REPORT_FILES = (REPORT_JSON, "report.md", "report.html")
# What an audit writes into its directory, and what each of its folders holds.
FOLDERS = {STAGES: (".json",), "figures": (".png",), "cache": ()}
# Files an operating system or a file browser leaves in any folder it shows: neither foreign nor ours.
LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def _half_written(name: str, of: tuple[str, ...]) -> bool:
    # write_atomic's temporary file (".<name>.<random>.tmp"), left behind only by a killed write
    return name.endswith(".tmp") and any(name.startswith(f".{written}.") for written in of)


def foreign_entries(root: Path) -> list[str]:
    """The names in ``root`` that no fedsecure audit writes (sorted); symbolic links are never fedsecure's."""
    foreign = []
    for entry in root.iterdir():
        name = entry.name
        if name in LITTER:
            continue
        if entry.is_symlink():
            foreign.append(name)
        elif name in REPORT_FILES or _half_written(name, REPORT_FILES):
            if not entry.is_file():
                foreign.append(name)
        elif name in FOLDERS:
            if not entry.is_dir() or _foreign_inside(entry, FOLDERS[name]):
                foreign.append(name)
        else:
            foreign.append(name)
    return sorted(foreign)


def _foreign_inside(folder: Path, suffixes: tuple[str, ...]) -> bool:
    """Whether ``folder`` holds something an audit does not write there (any suffix, for ``()``)."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            return True
        if path.name in LITTER:
            continue
        if path.is_file() and suffixes and not (path.name.endswith(suffixes) or path.name.endswith(".tmp")):
            return True
    return False


@dataclass(frozen=True)
class RunIdentity:
    """What makes two runs the same run: only then may one continue the other."""

    spec_name: str
    spec_sha256: str
    quick: bool
    device: str
    fedsecure: str | None  # stages computed by two versions are not one run
    engine: str = "in-process"


class RunDirectory:
    """The output directory of one audit run.

    Opening it refuses a directory that holds anything fedsecure did not
    write (``--out /`` or a home folder), another spec's results, or this
    spec's results when ``resume`` is false: nothing already written is lost.
    With ``force``, a directory that holds nothing but an earlier fedsecure run
    is emptied of that run first (the user asked to replace it).
    """

    def __init__(self, root: Path, identity: RunIdentity, resume: bool, force: bool = False) -> None:
        self.root = root
        self.identity = identity
        self._replace = False
        if root.is_symlink() and not root.exists():
            raise OutputError(f"{root}: a symbolic link to nothing; choose another --out")
        if root.exists() and not root.is_dir():
            raise OutputError(f"{root}: exists and is not a directory")
        if resume and force:
            raise OutputError("--resume continues the run in --out and --force replaces it: choose one")
        earlier = None
        if root.is_dir():
            try:
                foreign = foreign_entries(root)
                has_entries = any(entry.name not in LITTER for entry in root.iterdir())
            except OSError as exc:
                raise OutputError(f"{root}: cannot be read ({exc.strerror}); choose another --out") from None
            if foreign:
                shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
                raise OutputError(
                    f"{root}: holds files fedsecure did not write ({shown}); choose a new or empty --out "
                    "(nothing was written)"
                )
            earlier = self._earlier_run()
            if has_entries and earlier is None:
                raise OutputError(
                    f"{root}: holds files with fedsecure's names but no fedsecure run (no {STAGES}/{RUN_FILE}, "
                    f"no readable {REPORT_JSON}); choose a new or empty --out (nothing was written)"
                )
        if earlier is not None and force:
            # Replaced in begin(), once the spec, the data and every scenario's calibration were found sound:
            # a run that fails its checks leaves the earlier one as it was.
            self._replace = True
            earlier = None
        if earlier is not None:
            self._check_continues(earlier, resume)
        self.resumed = earlier is not None

    @property
    def stages(self) -> Path:
        """The directory of the finished stages' results (and of ``run.json``)."""
        return self.root / STAGES

    @property
    def finished(self) -> bool:
        """Whether a complete report of this run is already there."""
        return (self.root / REPORT_JSON).is_file()

    def begin(self) -> None:
        """Claim the directory for this run (idempotent); with ``force``, the earlier run is removed first."""
        if self._replace:
            self._remove_earlier_run()
            self._replace = False
        write_json(self.stages / RUN_FILE, asdict(self.identity))

    def load(self, stage: str) -> dict[str, Any] | None:
        """A finished stage's result, or None when it has not finished."""
        path = self._stage_path(stage)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            raise OutputError(f"{path}: unreadable stage result; delete it to run that stage again") from None

    def save(self, stage: str, result: dict[str, Any]) -> None:
        """Record a finished stage, atomically."""
        write_json(self._stage_path(stage), result)

    def _stage_path(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"

    def _remove_earlier_run(self) -> None:
        """Delete what the earlier audit wrote here: its names only, and what identifies the run last.

        Removed in that order, a deletion cut short leaves ``stages/run.json`` or
        report.json behind, so the directory still says whose results it holds.
        """
        if foreign_entries(self.root):  # something arrived since the check: touch nothing
            raise OutputError(f"{self.root}: changed while the audit prepared; nothing was removed")
        markers = [self.root / REPORT_JSON, self.stages / RUN_FILE]
        for entry in sorted(self.root.iterdir()):
            if entry.name in LITTER or entry.name == REPORT_JSON:
                continue
            if entry.name == STAGES:
                for stage in entry.iterdir():
                    if stage.name != RUN_FILE:
                        stage.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        for marker in markers:
            marker.unlink(missing_ok=True)
        if self.stages.is_dir():
            self.stages.rmdir()

    def _earlier_run(self) -> dict[str, Any] | None:
        """The identity of the run whose results the directory holds, if any."""
        run_file = self.stages / RUN_FILE
        report = self.root / REPORT_JSON
        if run_file.is_file():
            try:
                return json.loads(run_file.read_text())
            except (OSError, ValueError):
                raise OutputError(f"{run_file}: unreadable; choose another --out") from None
        if report.is_file():
            try:
                existing = json.loads(report.read_text())
                return {
                    "spec_name": existing["spec"]["name"],
                    "spec_sha256": existing["environment"]["spec_sha256"],
                    "quick": existing.get("quick", False),
                    "device": existing["environment"].get("device"),
                    "fedsecure": existing["environment"].get("fedsecure"),
                }
            except (OSError, ValueError, KeyError, TypeError):
                raise OutputError(f"{report}: exists and is not a fedsecure report; choose another --out") from None
        return None

    def _check_continues(self, earlier: dict[str, Any], resume: bool) -> None:
        mine = self.identity
        if earlier.get("spec_sha256") != mine.spec_sha256:
            raise OutputError(
                f"{self.root}: holds the results of another spec ({earlier.get('spec_name')!r}); choose another --out, "
                "or pass --force to replace them"
            )
        if bool(earlier.get("quick")) != mine.quick:
            kind = "a --quick run" if earlier.get("quick") else "a full run"
            raise OutputError(
                f"{self.root}: holds {kind} of this spec; choose another --out, or pass --force to replace it"
            )
        if not resume:
            state = "a finished" if self.finished else "an unfinished"
            raise OutputError(
                f"{self.root}: holds {state} run of this spec; pass --resume to continue it "
                "(or `fedsecure report` to re-render it), --force to replace it, or choose another --out"
            )
        if earlier.get("fedsecure") != mine.fedsecure:
            raise OutputError(
                f"{self.root}: was started by fedsecure {earlier.get('fedsecure')}, this is {mine.fedsecure}; "
                "finish it with that version, or choose another --out"
            )
        if earlier.get("device") != mine.device:
            raise OutputError(
                f"{self.root}: was started on {earlier.get('device')}; resume it there (--device "
                f"{earlier.get('device')}) so that every stage's numbers come from the same device"
            )
        if earlier.get("engine", "in-process") != mine.engine:
            raise OutputError(
                f"{self.root}: was started with --engine {earlier.get('engine', 'in-process')}; resume it with "
                "the same engine"
            )
