"""Figures for the UI and the docs (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fixability_dag.core.regimes import REGIMES

COLORS = {"retry_recoverable": "#4c9f70", "steerable_hard": "#e0a030", "structural": "#b04040"}


def topography_plot(table: pd.DataFrame, path: Path) -> Path:
    """Stacked regime shares per checkpoint, with the diagnostic pass rate on a second axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(table)), 3.6))
    bottom = pd.Series(0.0, index=table.index)
    for regime in REGIMES:
        values = table[f"share_{regime}"].fillna(0)
        ax.bar(table["checkpoint"], values, bottom=bottom, label=regime.replace("_", "-"), color=COLORS[regime])
        bottom += values
    ax.set_ylabel("share of failed problems")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", rotation=20)
    twin = ax.twinx()
    twin.plot(table["checkpoint"], table["pass_rate"], "k.-", label="base pass rate")
    twin.set_ylabel("base pass rate")
    twin.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
