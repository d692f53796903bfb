"""Calibration, part 3: reliability diagram and precision/coverage curve as PNG files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codex_core.calibration.features import DEFAULT_COVERAGE_RANGE, _as_arrays, expected_calibration_error
from codex_core.fsio import replace_atomically

# ---------------------------------------------------------------------------------------------
# Plots (matplotlib's object API on the Agg canvas: no pyplot state, safe off the main thread)
# ---------------------------------------------------------------------------------------------


def _save_figure(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    replace_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    return path


def reliability_diagram_png(probs: Any, labels: Any, path: Path, bins: int = 15) -> Path:
    """Observed accuracy vs. mean confidence per bin (bars) against the diagonal, with counts."""
    from matplotlib.figure import Figure

    p, y = _as_arrays(probs, labels)
    fig = Figure(figsize=(5.5, 6.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0.0, 1.0, bins + 1)
    width = 1.0 / bins
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    if p.size:
        index = np.minimum((p * bins).astype(int), bins - 1)
        counts = np.bincount(index, minlength=bins)
        used = counts > 0
        accuracy = np.bincount(index, weights=y, minlength=bins)[used] / counts[used]
        confidence = np.bincount(index, weights=p, minlength=bins)[used] / counts[used]
        top.bar(edges[:-1][used], accuracy, width=width, align="edge", alpha=0.7, edgecolor="black",
                label="observed accuracy")
        top.scatter(confidence, accuracy, color="black", s=12, zorder=3, label="mean confidence")
        bottom.bar(edges[:-1], counts, width=width, align="edge", color="tab:grey", edgecolor="black")
        title = f"Reliability (ECE {expected_calibration_error(p, y, bins):.3f}, n={p.size})"
    else:
        top.text(0.5, 0.5, "no samples", ha="center", va="center")
        title = "Reliability (no samples)"
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("fraction correct")
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("predicted confidence")
    bottom.set_ylabel("queries")
    return _save_figure(fig, path)


def precision_coverage_png(
    curve: Sequence[tuple[float, float, float]],
    path: Path,
    tau: float | None = None,
    coverage_range: tuple[float, float] = DEFAULT_COVERAGE_RANGE,
) -> Path:
    """Precision vs. coverage (from ``precision_at_coverage``), the target band and the chosen tau."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.subplots()
    ax.axvspan(*coverage_range, color="tab:green", alpha=0.12, label="target coverage")
    if curve:
        coverage = [c[0] for c in curve]
        precision = [c[1] for c in curve]
        ax.plot(coverage, precision, marker=".", markersize=3, linewidth=1.5, label="answer when confidence >= t")
        if tau is not None:
            at = min(curve, key=lambda c: abs(c[2] - tau))
            ax.scatter([at[0]], [at[1]], color="tab:red", s=50, zorder=3,
                       label=f"tau={tau:.3f}: precision {at[1]:.2f} at coverage {at[0]:.2f}")
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (fraction of queries answered)")
    ax.set_ylabel("precision (answers with the right top-1 file)")
    ax.set_title("Precision at coverage")
    ax.legend(loc="lower left", fontsize=8)
    return _save_figure(fig, path)
