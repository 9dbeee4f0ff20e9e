"""The report's figures, drawn from report.json with matplotlib as SVG.

Each function returns an SVG document, or None where the report holds nothing
to draw (no membership attack: no ROC curve). Figures are built on
``matplotlib.figure.Figure`` directly, never pyplot: no global state, no GUI
backend, safe in a library. The SVG keeps its text as text and carries no
date, so the same report renders to the same bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.typing import RcKeyType

from fedsecure.report.attack_finding import AttackFinding
from fedsecure.report.formatting import number
from fedsecure.report.report import Report
from fedsecure.report.scenario import ScenarioFinding

STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "none",  # text stays text: small, searchable, selectable
    "svg.hashsalt": "fedsecure",  # stable element ids: the same report gives the same file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
BASELINE_STYLES = {"centralized": ("#444444", "--"), "local-only": ("#999999", ":")}


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    with matplotlib.rc_context(STYLE):
        figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


def _new(width: float, height: float, panels: int = 1) -> tuple[Figure, list[Any]]:
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(width, height))
        axes = [figure.add_subplot(1, panels, i + 1) for i in range(panels)]
    return figure, axes


def _baseline_lines(axes: Any, report: Report) -> None:
    baselines = report.baselines
    for name, baseline in (("centralized", baselines.centralized), ("local-only", baselines.local_only)):
        value = report.headline(baseline)
        if value is not None:
            color, style = BASELINE_STYLES[name]
            axes.axhline(value, color=color, linestyle=style, linewidth=1, label=f"{name} baseline",
                         gid=f"baseline-{name}")


def _colors(report: Report) -> dict[str, str]:
    """One colour per scenario, the same in every figure."""
    return {s.name: f"C{i % 10}" for i, s in enumerate(report.scenarios)}


def _labelled_points(axes: Any, points: list[tuple[str, float, float]], colors: dict[str, str]) -> None:
    """Scatter named points; points that coincide (e.g. plain and CKKS, bit-identical models) share one label."""
    labels: dict[tuple[float, float], list[str]] = {}
    for name, x, y in points:
        axes.scatter(x, y, s=30, zorder=3, color=colors[name])
        labels.setdefault((round(x, 9), round(y, 9)), []).append(name)
    for (x, y), names in labels.items():
        axes.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)


def _round_axis(axes: Any) -> None:
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")


def frontier_figure(report: Report) -> str:
    """Utility against epsilon and against attack success, with the baselines as reference lines.

    Scenarios under one DP guarantee (an epsilon sweep) are joined into a curve per guarantee,
    sorted by epsilon; the non-private federation is a reference line beside the centralized and
    local-only baselines. Where some guarantee has a curve, a third panel draws the measured
    leakage against epsilon, the non-private federation's leakage as its reference line.
    """
    with matplotlib.rc_context(STYLE):
        scenarios = [s for s in report.scenarios if report.headline(s.utility) is not None]
        curves = _dp_curves(scenarios)
        measure, points, left_out = _attack_axis(report, scenarios)
        sweep_panel = bool(curves) and measure is not None
        figure, panels = _new(13.5 if sweep_panel else 9.5, 3.6, panels=3 if sweep_panel else 2)
        by_epsilon, by_attack = panels[0], panels[1]
        finite = [s.privacy.epsilon for s in scenarios if s.privacy.epsilon is not None]
        # No DP is epsilon = infinity: drawn at the right edge, on its own tick.
        infinity = 4 * max(finite) if finite else 10.0
        colors = _colors(report)
        on_curves = {s.name for members in curves.values() for s in members}
        _labelled_points(by_epsilon, [
            (s.name, infinity if s.privacy.epsilon is None else s.privacy.epsilon, _utility(report, s))
            for s in scenarios if s.name not in on_curves
        ], colors)
        for guarantee, members in curves.items():
            by_epsilon.plot([s.privacy.epsilon for s in members], [_utility(report, s) for s in members],
                            marker="o", markersize=4, color=CURVE_COLORS.get(guarantee), label=guarantee,
                            gid=_curve_id(guarantee))
        by_epsilon.set_xscale("log")
        ticks = _spaced(sorted({*finite, infinity}))
        by_epsilon.set_xticks(ticks, [("no DP" if t == infinity else f"{t:.3g}") for t in ticks])
        by_epsilon.minorticks_off()
        by_epsilon.set_xlim(min(ticks) / 2, infinity * 2)
        _baseline_lines(by_epsilon, report)
        _federated_line(by_epsilon, report, scenarios)
        by_epsilon.set_xlabel("epsilon (accountant)")
        by_epsilon.set_ylabel(f"test {report.metric_label}")
        by_epsilon.set_title("utility vs. formal privacy")
        _legend_below(by_epsilon)

        values = {name: x for name, x, _ in points}
        _labelled_points(by_attack, [p for p in points if p[0] not in on_curves], colors)
        for guarantee, members in curves.items():
            placed = [s for s in members if s.name in values]
            # Points, not a line: leakage is not ordered along the sweep.
            by_attack.plot([values[s.name] for s in placed], [_utility(report, s) for s in placed],
                           marker="o", markersize=4, linestyle="none", color=CURVE_COLORS.get(guarantee),
                           label=guarantee)
        _baseline_lines(by_attack, report)
        by_attack.set_ylabel(f"test {report.metric_label}")
        by_attack.set_title("utility vs. measured leakage")
        if measure is None:
            by_attack.text(0.5, 0.5, "no attack in this spec", transform=by_attack.transAxes, ha="center")
            by_attack.set_xlabel("attack success")
        else:
            by_attack.set_xlabel(measure)
        if left_out:
            by_attack.text(0.01, 0.01, "not plotted: " + "; ".join(left_out), transform=by_attack.transAxes,
                           fontsize=7, va="bottom")
        _legend_below(by_attack)
        by_attack.set_ylim(by_epsilon.get_ylim())  # one utility scale across both panels
        if sweep_panel:
            _leakage_by_epsilon(panels[2], curves, values, scenarios, str(measure))
        return _svg(figure)


CURVE_COLORS = {"sample-level DP": "#1f77b4", "client-level DP": "#d62728"}


def _curve_id(guarantee: str) -> str:
    return "curve-" + guarantee.split("-")[0]  # "curve-sample", "curve-client": what the browser test looks for


def _dp_curves(scenarios: list[ScenarioFinding]) -> dict[str, list[ScenarioFinding]]:
    """The scenarios of each DP guarantee with a finite epsilon, by epsilon, where a guarantee has two or more."""
    grouped: dict[str, list[ScenarioFinding]] = {}
    for s in scenarios:
        if s.privacy.epsilon is not None and s.privacy.guarantee != "none":
            grouped.setdefault(s.privacy.guarantee, []).append(s)
    return {guarantee: sorted(members, key=lambda s: float(s.privacy.epsilon or 0.0))
            for guarantee, members in grouped.items() if len(members) >= 2}


def _federated_line(axes: Any, report: Report, scenarios: list[ScenarioFinding]) -> None:
    """The non-private federation's utility as a reference line (the first scenario without DP)."""
    plain = next((s for s in scenarios if s.privacy.guarantee == "none"), None)
    if plain is not None:
        axes.axhline(_utility(report, plain), color="#2ca02c", linestyle="-.", linewidth=1,
                     label=f"federated, no DP ({plain.name})", gid="reference-federated")


def _leakage_by_epsilon(
    axes: Any, curves: dict[str, list[ScenarioFinding]], values: dict[str, float], scenarios: list[ScenarioFinding],
    measure: str,
) -> None:
    for guarantee, members in curves.items():
        placed = [s for s in members if s.name in values]
        axes.plot([s.privacy.epsilon for s in placed], [values[s.name] for s in placed], marker="o", markersize=4,
                  color=CURVE_COLORS.get(guarantee), label=guarantee, gid=_curve_id(guarantee) + "-leakage")
    plain = next((s for s in scenarios if s.privacy.guarantee == "none" and s.name in values), None)
    if plain is not None:
        axes.axhline(values[plain.name], color="#2ca02c", linestyle="-.", linewidth=1,
                     label=f"federated, no DP ({plain.name})")
    axes.set_xscale("log")
    ticks = _spaced(sorted({float(s.privacy.epsilon or 0.0) for members in curves.values() for s in members}))
    axes.set_xticks(ticks, [f"{t:.3g}" for t in ticks])
    axes.minorticks_off()
    axes.set_xlabel("epsilon (accountant)")
    axes.set_ylabel(measure)
    axes.set_title("measured leakage vs. formal privacy")
    _legend_below(axes)


def _legend_below(axes: Any) -> None:
    # Below the axes, not on them: a sweep's points reach every corner of the panel.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7, frameon=False)


def _spaced(ticks: list[float], gap: float = 1.15) -> list[float]:
    """Ticks on a log axis far enough apart that their labels do not overlap (7.99 and 8 become one)."""
    kept: list[float] = []
    for tick in ticks:
        if not kept or tick / kept[-1] >= gap:
            kept.append(tick)
        elif tick == ticks[-1]:
            kept[-1] = tick  # the last tick (no DP) always keeps its place
    return kept


def _utility(report: Report, scenario: ScenarioFinding) -> float:
    value = report.headline(scenario.utility)
    assert value is not None  # only scenarios with a value are plotted
    return value


def _attack_axis(
    report: Report, scenarios: list[ScenarioFinding]
) -> tuple[str | None, list[tuple[str, float, float]], list[str]]:
    """What the leakage axis measures, the points on it, and the scenarios left off it (with why).

    The axis is the leakage of the kind of attack that ranks first (``frontier_rank``) among those that
    placed some scenario (among all, where none did); each scenario is placed by its first attack of that
    kind with a value (the spec's attack comes before the reference attacks run beside it).
    """
    attacks = [a for s in scenarios for a in s.attacks]
    if not attacks:
        return None, [], []
    placed = [a for a in attacks if a.frontier_value() is not None]
    first = min(placed or attacks, key=lambda a: a.frontier_rank)
    kind = type(first)
    points, left_out = [], []
    for s in scenarios:
        mine = [a for a in s.attacks if type(a) is kind]
        found = next((a for a in mine if a.frontier_value() is not None), None)
        if found is not None:
            points.append((s.name, _value(found), _utility(report, s)))
        else:
            left_out.append(f"{s.name} ({mine[0].status_text if mine else 'not measured'})")
    return first.frontier_axis(), points, left_out


def _value(attack: AttackFinding) -> float:
    value = attack.frontier_value()
    assert value is not None
    return value


def roc_figure(report: Report) -> str | None:
    """Log-log ROC curves of every attack that has one (None when none has)."""
    curves = [(s.name, a.method, curve) for s in report.scenarios for a in s.attacks
              if (curve := a.roc_curve()) is not None]
    if not curves:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 4.2)
        smallest = min(1.0 / max(curve.negatives, 1) for _, _, curve in curves)
        colors = _colors(report)
        for name, method, curve in curves:
            fpr = [max(f, smallest / 2) for f in curve.fpr]  # a log axis has no zero
            tpr = [max(t, smallest / 2) for t in curve.tpr]
            axes.plot(fpr, tpr, linewidth=1.2, linestyle="-" if method != "loss" else ":", color=colors[name],
                      label=f"{name}: {method} (AUC {number(curve.auc)})")
        axes.plot([smallest / 2, 1], [smallest / 2, 1], color="#888888", linewidth=0.8, linestyle="--", label="chance")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlim(smallest / 2, 1)
        axes.set_ylim(smallest / 2, 1)
        axes.axvline(smallest, color="#bbbbbb", linewidth=0.8)
        axes.set_xlabel(f"false-positive rate (vertical line: 1/{round(1 / smallest)} non-members)")
        axes.set_ylabel("true-positive rate")
        axes.set_title("membership inference, released model")
        axes.legend(fontsize=6.5, loc="lower right")
        return _svg(figure)


def epsilon_figure(report: Report) -> str | None:
    """The accountant's epsilon after each round, for every DP scenario (None when none has DP)."""
    private = [s for s in report.scenarios if s.privacy.epsilon is not None]
    if not private:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 3.4)
        colors = _colors(report)
        for s in private:
            rounds = [r.round for r in s.rounds if r.epsilon is not None]
            epsilons = [r.epsilon for r in s.rounds if r.epsilon is not None]
            axes.plot(rounds, epsilons, marker="o", markersize=3, label=s.name, color=colors[s.name])
            target = s.privacy.target_epsilon
            if target is not None and math.isfinite(target):
                axes.axhline(target, color=colors[s.name], linestyle="--", linewidth=0.8)
        _round_axis(axes)
        axes.set_ylabel("epsilon spent (dashed: target)")
        axes.set_title("privacy budget over rounds")
        axes.legend(fontsize=7)
        return _svg(figure)


def utility_figure(report: Report) -> str | None:
    """Test AUC (Dice) of the global model after each round, for every scenario, with the baselines."""
    scenarios = [s for s in report.scenarios if any(report.headline(r) is not None for r in s.rounds)]
    if not scenarios:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 3.4)
        colors = _colors(report)
        for i, s in enumerate(scenarios):
            points = [(r.round, v) for r in s.rounds if (v := report.headline(r)) is not None]
            # Earlier lines are wider, so that identical runs (plain and CKKS are bit-identical) both show.
            width = 1.2 + 2.0 * (len(scenarios) - 1 - i) / max(len(scenarios) - 1, 1)
            rounds, aucs = zip(*points, strict=True)
            axes.plot(rounds, aucs, marker="o", markersize=3, linewidth=width, label=s.name, color=colors[s.name])
        _baseline_lines(axes, report)
        _round_axis(axes)
        axes.set_ylabel(f"test {report.metric_label}")
        axes.set_title("utility over rounds")
        axes.legend(fontsize=7)
        return _svg(figure)


def study_figure(report: Report) -> str | None:
    """Each study method's pooled metric with its interval over seeds, and its value on each site (None: no study)."""
    study = report.study
    if study is None:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(6.2, 0.5 + 0.45 * len(study.methods))
        sites = [value.site for value in study.methods[0].per_site]
        markers = ["s", "^", "v", "D", "P", "X", "*", "<", ">", "h"]
        for row, method in enumerate(reversed(study.methods)):
            if method.mean is not None:
                if method.interval is not None:
                    axes.plot(method.interval, [row, row], color="#333333", linewidth=2, solid_capstyle="butt")
                axes.scatter(method.mean, row, s=40, color="#333333", zorder=3,
                             label="pooled (mean, interval over seeds)" if row == 0 else None)
            for k, value in enumerate(method.per_site):
                if value.mean is not None:
                    axes.scatter(value.mean, row + 0.18, s=14, marker=markers[k % len(markers)],
                                 color=f"C{k % 10}", label=value.site if row == 0 else None)
        axes.set_yticks(range(len(study.methods)), [m.name for m in reversed(study.methods)])
        axes.set_ylim(-0.6, len(study.methods) - 0.2)
        axes.set_xlabel(f"test {report.metric_label} ({len(study.seeds)} seed(s); small markers: each site's share)")
        axes.set_title("training methods compared (the survey's study)")
        axes.legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2 if len(sites) > 8 else 1)
        return _svg(figure)
