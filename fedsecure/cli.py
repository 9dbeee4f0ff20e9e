"""The ``fedsecure`` command line.

A user's mistake (a bad spec, a missing data file, an unknown option) is one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from fedsecure.errors import FedsecureError

USER_ERROR = 2

app = typer.Typer(
    name="fedsecure",
    help="Privacy audits of federated learning on medical images.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stderr = Console(stderr=True)


class RichProgress:
    """Progress bars on stderr: the whole audit, with its time left, and the stage running now."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.overall: TaskID | None = None

    def plan(self, units: float) -> None:
        """Start the whole audit's bar (its units are about one round of training each)."""
        self.overall = self.progress.add_task("[bold]audit[/] (time left: all pending stages)", total=max(units, 1e-9))

    @contextmanager
    def task(self, description: str, total: int, units_per_step: float = 1.0) -> Iterator:
        """A bar for one stage; each step also advances the audit's bar by ``units_per_step``."""
        task_id = self.progress.add_task(description, total=total)

        def advance() -> None:
            self.progress.advance(task_id)
            if self.overall is not None:
                self.progress.advance(self.overall, units_per_step)

        try:
            yield advance
        finally:
            self.progress.remove_task(task_id)  # finished stages give way to the next


@app.command()
def audit(
    spec: Annotated[
        Path | None, typer.Argument(help="Audit spec (TOML). Without it: the embedded synthetic default.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output directory [default: audit-out/SPEC-NAME].")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Use this MedMNIST .npz instead of the spec's data.path.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when available), cpu or cuda.")] = "auto",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the interrupted run in --out: finished stages are kept.")
    ] = False,
    quick: Annotated[
        bool, typer.Option("--quick", help="A small, fast version of the spec: a first look, not evidence.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this scenario (repeatable).", metavar="SCENARIO")
    ] = None,
    engine: Annotated[
        str, typer.Option("--engine", help="in-process, or flower (Flower's simulation engine; fedsecure[flower]).")
    ] = "in-process",
    force: Annotated[
        bool, typer.Option("--force", help="Replace the earlier fedsecure run in --out (never other files).")
    ] = False,
) -> None:
    """Train every scenario of SPEC, attack it, and write report.json, report.md and report.html."""
    from fedsecure.audit.runner import run_audit
    from fedsecure.config.spec import load_spec
    from fedsecure.report import Report
    from fedsecure.report.output import STAGES
    from fedsecure.report.rendering import REPORT_HTML, REPORT_MD
    from fedsecure.report.terminal import summary

    loaded = load_spec(spec, data_path=data)
    out_dir = out if out is not None else Path("audit-out") / (loaded.spec.name + ("-quick" if quick else ""))
    columns = (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
    )
    try:
        # transient: bars vanish when done (or on an error), leaving the summary or the one-line error
        # (not on a pipe or a log file, where the redrawn bars would be noise)
        with Progress(*columns, console=stderr, transient=True, disable=not stderr.is_terminal) as bars:
            report = run_audit(
                loaded, out_dir, device=device, progress=RichProgress(bars), resume=resume, quick=quick, only=only,
                engine=engine, force=force,
            )
    except KeyboardInterrupt:
        if (out_dir / STAGES).is_dir():
            stderr.print(
                f"aborted; finished stages are kept in {out_dir}: add --resume to continue",
                highlight=False,
                soft_wrap=True,
            )
            sys.exit(130)
        raise
    # The summary goes to stdout with the paths (what a user keeps); progress and warnings stay on stderr.
    stdout = Console(highlight=False)
    if not stdout.is_terminal:  # a log file or a pipe: the table at a readable width, not squeezed into 80 columns
        stdout = Console(highlight=False, width=160)
    stdout.print(summary(Report.from_json(report), out_dir / REPORT_HTML))
    stdout.print(f"audit compute time {report['wall_seconds']:.0f} s")
    # Paths are printed as they are: "[...]" in a directory name is not rich markup.
    stdout.print(
        f"wrote {out_dir / 'report.json'}, {out_dir / REPORT_MD} and {out_dir / REPORT_HTML}", markup=False,
        soft_wrap=True,
    )


@app.command()
def plan(
    spec: Annotated[
        Path | None, typer.Argument(help="Audit spec (TOML). Without it: the embedded synthetic default.")
    ] = None,
    noise_to_signal: Annotated[
        float | None,
        typer.Option("--noise-to-signal", min=1e-9, help="Client-level DP: how many sites bring the noise under this."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Use this MedMNIST .npz instead of the spec's data.path.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON (for programs).")] = False,
) -> None:
    """Print, without training, each DP scenario's noise, its epsilon per adversary, and the noise-to-signal ratio."""
    import dataclasses
    import json

    from rich.table import Table

    from fedsecure.audit.plan import plan_study
    from fedsecure.config.spec import load_spec

    loaded = load_spec(spec, data_path=data).spec
    plans = plan_study(loaded, loaded.data.federated(loaded.seed), noise_to_signal)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(p) for p in plans], indent=2))
        return
    stdout = Console(highlight=False) if Console().is_terminal else Console(highlight=False, width=200)
    if not plans:
        stdout.print(f"{loaded.name}: no scenario has differential privacy; nothing to plan")
        return

    def epsilon(value: float | None) -> str:
        return "none" if value is None else f"{value:.3g}"

    table = Table(title=f"{loaded.name}: DP scenarios as planned ({loaded.federation.rounds} rounds, nothing trained)")
    for column in ("scenario", "level", "target", "epsilon", "public / server / site", "noise mult.",
                   "noise per coord.", "noise / signal", "sites for target"):
        table.add_column(column, justify="left" if column in ("scenario", "level") else "right")
    for p in plans:
        parties = " / ".join(epsilon(p.by_adversary.get(party)) for party in ("public", "server", "site"))
        table.add_row(
            p.scenario, p.level, f"{p.target_epsilon:g}", epsilon(p.epsilon), parties, f"{p.noise_multiplier:.3g}",
            f"{p.noise_per_coordinate:.3g}", f"{p.noise_to_signal:.3g}",
            "-" if p.level == "sample" or noise_to_signal is None else (
                str(p.sites_for_target) if p.sites_for_target is not None else "> 1e6"),
        )
    stdout.print(table)
    for p in plans:
        stdout.print(f"{p.scenario}: noise on {p.noise_on}; d = {p.message_length:,} values; {'; '.join(p.notes)}",
                     markup=False, soft_wrap=True)


@app.command()
def report(
    directory: Annotated[Path, typer.Argument(help="An audit's output directory (holding report.json).")],
) -> None:
    """Render report.md and report.html again from DIRECTORY/report.json, without re-running anything."""
    from fedsecure.report.rendering import rerender

    for path in rerender(directory):
        typer.echo(f"wrote {path}")


@app.command()
def keygen(
    spec: Annotated[Path, typer.Argument(help="Audit spec (TOML).")],
    scenario: Annotated[str, typer.Option("--scenario", help="The CKKS scenario the key is for.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Key file to write (must not exist).")],
) -> None:
    """Write the CKKS secret context the sites of a deployment share (give it to every SuperNode, not the server)."""
    from fedsecure.config.spec import load_spec
    from fedsecure.flower.keys import write_site_secret

    write_site_secret(load_spec(spec), scenario, out)
    typer.echo(f"wrote {out} (secret: copy it to every site over your own channel, never to the server)")


@app.command()
def sites(
    spec: Annotated[Path, typer.Argument(help="Audit spec (TOML).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for site-K.npz and site-K/ NIfTI folders (must not exist).")
    ],
    data: Annotated[
        Path | None, typer.Option("--data", help="Use this MedMNIST .npz instead of the spec's data.path.")
    ] = None,
) -> None:
    """Split the spec's data into the files each site would hold, as the spec federates it (to try a deployment).

    Per site: a MedMNIST-format site-K.npz, and a site-K/ folder of NIfTI files with a
    Decathlon dataset.json and a datalist.csv (single-channel data).
    """
    from fedsecure.config.spec import load_spec
    from fedsecure.data.site_files import write_site_files

    for path in write_site_files(load_spec(spec, data_path=data).spec, out):
        folder = path.with_suffix("")
        typer.echo(f"wrote {path}" + (f" and {folder}/ (dataset.json, datalist.csv)" if folder.is_dir() else ""))


@app.command()
def version() -> None:
    """Print fedsecure's version."""
    from importlib.metadata import version as installed

    typer.echo(installed("fedsecure"))


_shown_warnings: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Warnings state a weakened guarantee; they must be seen, on one line, and once
    # (the attack probes rebuild a scenario's federation, which warns again).
    text = str(message)
    if text in _shown_warnings:
        return
    _shown_warnings.add(text)
    stderr.print(f"[bold yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``fedsecure`` console script."""
    warnings.showwarning = _show_warning
    try:
        code = app(args=argv, standalone_mode=False)
    except FedsecureError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        stderr.print("aborted")
        sys.exit(130)
    except Exception as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # the parser's Abort wraps Ctrl-C
            stderr.print("aborted")
            sys.exit(130)
        # Typer vendors its own copy of click, whose exceptions are not public:
        # recognise its usage errors by their interface, not their class.
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            _fail(f"{exc.format_message()} (see --help)")
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str) -> None:
    stderr.print(f"error: {message}", highlight=False, markup=False, soft_wrap=True)
    sys.exit(USER_ERROR)


if __name__ == "__main__":
    main()
