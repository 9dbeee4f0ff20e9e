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

STYLE = {
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


def _baseline_lines(axes: Any, report: dict[str, Any]) -> None:
    baselines = {"centralized": report["baselines"]["centralized"], "local-only": report["baselines"]["local_only"]}
    for name, baseline in baselines.items():
        if baseline["auc"] is not None:
            color, style = BASELINE_STYLES[name]
            axes.axhline(baseline["auc"], color=color, linestyle=style, linewidth=1, label=f"{name} baseline")


def _colors(report: dict[str, Any]) -> dict[str, str]:
    """One colour per scenario, the same in every figure."""
    return {s["name"]: f"C{i % 10}" for i, s in enumerate(report["scenarios"])}


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


def _main_membership(scenario: dict[str, Any]) -> dict[str, Any] | None:
    """The spec's membership attack (not the loss attack run beside it as a reference point)."""
    attacks = [a for a in scenario["attacks"] if a["attack"] == "membership" and a["status"] == "ok"]
    return attacks[0] if attacks else None


def frontier_figure(report: dict[str, Any]) -> str:
    """Utility against epsilon (left) and against attack success (right), with the baselines as reference lines."""
    with matplotlib.rc_context(STYLE):
        figure, (by_epsilon, by_attack) = _new(9.5, 3.6, panels=2)
        scenarios = [s for s in report["scenarios"] if s["utility"]["auc"] is not None]
        finite = [s["privacy"]["epsilon"] for s in scenarios if s["privacy"]["epsilon"] is not None]
        # No DP is epsilon = infinity: drawn at the right edge, on its own tick.
        infinity = 4 * max(finite) if finite else 10.0
        colors = _colors(report)
        _labelled_points(by_epsilon, [
            (s["name"], infinity if s["privacy"]["epsilon"] is None else s["privacy"]["epsilon"], s["utility"]["auc"])
            for s in scenarios
        ], colors)
        by_epsilon.set_xscale("log")
        ticks = _spaced(sorted({*finite, infinity}))
        by_epsilon.set_xticks(ticks, [("no DP" if t == infinity else f"{t:.3g}") for t in ticks])
        by_epsilon.minorticks_off()
        by_epsilon.set_xlim(min(ticks) / 2, infinity * 2)
        _baseline_lines(by_epsilon, report)
        by_epsilon.set_xlabel("epsilon (accountant)")
        by_epsilon.set_ylabel("test AUC")
        by_epsilon.set_title("utility vs. formal privacy")
        by_epsilon.legend(loc="lower right", fontsize=7)

        measure, points, left_out = _attack_axis(scenarios)
        _labelled_points(by_attack, points, colors)
        _baseline_lines(by_attack, report)
        by_attack.set_ylabel("test AUC")
        by_attack.set_title("utility vs. measured leakage")
        if measure is None:
            by_attack.text(0.5, 0.5, "no attack in this spec", transform=by_attack.transAxes, ha="center")
            by_attack.set_xlabel("attack success")
        else:
            by_attack.set_xlabel(measure)
        if left_out:
            by_attack.text(0.01, 0.01, "not plotted: " + "; ".join(left_out), transform=by_attack.transAxes,
                           fontsize=7, va="bottom")
        by_attack.legend(loc="lower right", fontsize=7)
        by_attack.set_ylim(by_epsilon.get_ylim())  # one utility scale across both panels
        return _svg(figure)


def _spaced(ticks: list[float], gap: float = 1.15) -> list[float]:
    """Ticks on a log axis far enough apart that their labels do not overlap (7.99 and 8 become one)."""
    kept: list[float] = []
    for tick in ticks:
        if not kept or tick / kept[-1] >= gap:
            kept.append(tick)
        elif tick == ticks[-1]:
            kept[-1] = tick  # the last tick (no DP) always keeps its place
    return kept


def _attack_axis(scenarios: list[dict[str, Any]]) -> tuple[str | None, list[tuple[str, float, float]], list[str]]:
    """What the leakage axis measures, the points on it, and the scenarios left off it (with why)."""
    membership = {s["name"]: _main_membership(s) for s in scenarios}
    if any(membership.values()):
        method = next(a["method"] for a in membership.values() if a)
        points = [(s["name"], membership[s["name"]]["tpr_at_fpr"]["0.01"]["tpr"], s["utility"]["auc"])
                  for s in scenarios if membership[s["name"]]]
        left_out = [f"{s['name']} (no membership result)" for s in scenarios if not membership[s["name"]]]
        return f"membership TPR at 1% FPR ({method})", points, left_out
    inversions = {s["name"]: next((a for a in s["attacks"] if a["attack"] == "inversion"), None) for s in scenarios}
    if any(inversions.values()):
        points = [(s["name"], inversions[s["name"]]["psnr_gain_median"], s["utility"]["auc"])
                  for s in scenarios if inversions[s["name"]] and inversions[s["name"]]["status"] == "ok"]
        left_out = [f"{s['name']} ({inversions[s['name']]['status'].replace('_', ' ')})"
                    for s in scenarios if inversions[s["name"]] and inversions[s["name"]]["status"] != "ok"]
        return "reconstruction PSNR gain over the prior image (dB)", points, left_out
    return None, [], []


def roc_figure(report: dict[str, Any]) -> str | None:
    """Log-log ROC curves of every membership attack (None when none ran)."""
    curves = [(s["name"], a) for s in report["scenarios"] for a in s["attacks"]
              if a["attack"] == "membership" and a["status"] == "ok" and a["roc"].get("fpr")]
    if not curves:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 4.2)
        smallest = min(1.0 / max(a["non_members"], 1) for _, a in curves)
        colors = _colors(report)
        for name, attack in curves:
            fpr = [max(f, smallest / 2) for f in attack["roc"]["fpr"]]  # a log axis has no zero
            tpr = [max(t, smallest / 2) for t in attack["roc"]["tpr"]]
            axes.plot(fpr, tpr, linewidth=1.2, linestyle="-" if attack["method"] != "loss" else ":", color=colors[name],
                      label=f"{name}: {attack['method']} (AUC {attack['auc']:.3f})")
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


def epsilon_figure(report: dict[str, Any]) -> str | None:
    """The accountant's epsilon after each round, for every DP scenario (None when none has DP)."""
    private = [s for s in report["scenarios"] if s["privacy"]["epsilon"] is not None]
    if not private:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 3.4)
        colors = _colors(report)
        for s in private:
            rounds = [r["round"] for r in s["rounds"] if r["epsilon"] is not None]
            epsilons = [r["epsilon"] for r in s["rounds"] if r["epsilon"] is not None]
            axes.plot(rounds, epsilons, marker="o", markersize=3, label=s["name"], color=colors[s["name"]])
            target = s["privacy"].get("target_epsilon")
            if target is not None and math.isfinite(target):
                axes.axhline(target, color=colors[s["name"]], linestyle="--", linewidth=0.8)
        _round_axis(axes)
        axes.set_ylabel("epsilon spent (dashed: target)")
        axes.set_title("privacy budget over rounds")
        axes.legend(fontsize=7)
        return _svg(figure)


def utility_figure(report: dict[str, Any]) -> str | None:
    """Test AUC of the global model after each round, for every scenario, with the baselines."""
    scenarios = [s for s in report["scenarios"] if any(r["auc"] is not None for r in s["rounds"])]
    if not scenarios:
        return None
    with matplotlib.rc_context(STYLE):
        figure, (axes,) = _new(5.2, 3.4)
        colors = _colors(report)
        for i, s in enumerate(scenarios):
            points = [(r["round"], r["auc"]) for r in s["rounds"] if r["auc"] is not None]
            # Earlier lines are wider, so that identical runs (plain and CKKS are bit-identical) both show.
            width = 1.2 + 2.0 * (len(scenarios) - 1 - i) / max(len(scenarios) - 1, 1)
            axes.plot(*zip(*points), marker="o", markersize=3, linewidth=width, label=s["name"], color=colors[s["name"]])
        _baseline_lines(axes, report)
        _round_axis(axes)
        axes.set_ylabel("test AUC")
        axes.set_title("utility over rounds")
        axes.legend(fontsize=7)
        return _svg(figure)
