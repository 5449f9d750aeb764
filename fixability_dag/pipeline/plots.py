"""Figures for the UI and the docs (matplotlib, headless): each written as a PNG next to the results database
(:func:`figure_dir`) and handed back with its bytes; the Dagster layer links it in the asset's markdown metadata as
the figure server serves it (:mod:`fixability_dag.pipeline.figure_server`), so the picture is on the asset page,
not behind a file path.

Sizes are for the asset page: 6.4 x 3.4 inches at 100 dpi is 640 px, what the page's metadata table shows beside
its key and timestamp columns without scrolling sideways in a full-HD (1920 px) window (tests/system/test_ui.py
checks it; at 750 px the table scrolled). A topography of more checkpoints than fit grows wider instead.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pandas as pd

from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.stats import wilson_interval
from fixability_dag.storage.store import beside_database

COLORS = {"retry_recoverable": "#4c9f70", "steerable_hard": "#e0a030", "structural": "#b04040"}
WIDTH, HEIGHT, DPI = 6.4, 3.4, 100


@dataclasses.dataclass(frozen=True)
class Figure:
    """A rendered figure: its PNG bytes, where it was written, and a one-line caption."""

    png: bytes
    path: Path
    caption: str


def figure_dir(db_url: str) -> Path:
    """Where figures go: ``figures/`` beside a SQLite file; ``.fixability/figures`` for a server database."""
    return beside_database(db_url, "figures")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, caption: str) -> Figure:
    plt = _pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    png = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return Figure(png, path, caption)


def topography_order(table: pd.DataFrame) -> pd.DataFrame:
    """Checkpoints grouped by recipe, groups in order of their earliest step, by training step within a group
    (so an RFT run started from SFT step 2000 comes after the SFT steps, not between them alphabetically)."""
    if table.empty:
        return table
    recipe = table["recipe"].fillna("unknown")
    first = table.groupby(recipe)["step"].transform("min")
    order = table.assign(_recipe=recipe, _first=first).sort_values(["_first", "_recipe", "step", "checkpoint"],
                                                                   na_position="last", kind="stable")
    return order.drop(columns=["_recipe", "_first"]).reset_index(drop=True)


def topography_plot(table: pd.DataFrame, path: Path) -> Figure:
    """Stacked regime shares per checkpoint (ordered by :func:`topography_order`), the base pass rate on a second
    axis, and the recipe under each group of bars; below them, when the audit counted them, the tokens generated
    per failed problem after the diagnosis (probe, label, eval): what each checkpoint's failures cost to explain."""
    plt = _pyplot()
    table = topography_order(table)
    labels = [f"{c}\n{r or '?'} @ {'?' if pd.isna(s) else int(s)}" for c, r, s in
              zip(table["checkpoint"], table["recipe"], table["step"])]
    per_failed = pd.to_numeric(table.get("generated_tokens_per_failed", pd.Series(dtype=float)), errors="coerce")
    size = (max(WIDTH, 1.1 * len(table)), HEIGHT + 0.4)
    if per_failed.notna().any():
        fig, (ax, cost) = plt.subplots(2, 1, sharex=True, figsize=(size[0], size[1] + 1.6),
                                       gridspec_kw={"height_ratios": [HEIGHT, 1.2]})
        cost.bar(labels, per_failed.fillna(0), color="#7a7a7a")
        cost.set_ylabel("tokens per\nfailed problem", fontsize=8)
        cost.tick_params(axis="both", labelsize=8)
    else:
        fig, ax = plt.subplots(figsize=size)
        cost = ax
    bottom = pd.Series(0.0, index=table.index)
    for regime in REGIMES:
        values = table[f"share_{regime}"].fillna(0)
        ax.bar(labels, values, bottom=bottom, label=regime.replace("_", "-"), color=COLORS[regime])
        bottom += values
    ax.set_ylabel("share of failed problems")
    ax.set_ylim(0, 1)
    cost.tick_params(axis="x", labelsize=8)
    if len(table) > 4:  # the two-line labels would run into each other: slant them
        plt.setp(cost.get_xticklabels(), rotation=20, ha="right", rotation_mode="anchor")
    twin = ax.twinx()
    twin.plot(labels, table["pass_rate"], "ko-", label="base pass rate")
    twin.set_ylabel("base pass rate")
    twin.set_ylim(0, 1)
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=8, frameon=False, ncol=4)
    ax.set_title("Failure topography: regimes of the failed problems by checkpoint", fontsize=10, pad=22)
    count = f"{len(table)} checkpoint{'s' if len(table) != 1 else ''}"
    tokens = ", generated tokens per failed problem under them" if cost is not ax else ""
    return _save(fig, path, f"Regime shares of the failed problems and base pass rate{tokens}, {count}, "
                            "grouped by recipe and ordered by training step")


def pass_rate_by_difficulty_plot(rates: pd.DataFrame, checkpoint_id: str, path: Path) -> Figure:
    """Mean base pass rate per difficulty (``difficulty``, ``pass rate`` columns)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    ax.bar([str(d) for d in rates["difficulty"]], rates["pass rate"], color="#4a78b0")
    ax.set_xlabel("difficulty (chain length for the arithmetic suite)")
    ax.set_ylabel("base pass rate")
    ax.set_ylim(0, 1)
    ax.set_title(f"{checkpoint_id}: pass rate by difficulty", fontsize=10)
    return _save(fig, path, f"{checkpoint_id}: mean base pass rate per difficulty")


def rescue_plot(evaluations: pd.DataFrame, checkpoint_id: str, path: Path) -> Figure:
    """Rescue rate per policy over all failed problems, with 95% Wilson intervals (they hold at small n); a policy's
    own rescues are the same at both matchings of compute, so the equal-samples rows are drawn."""
    plt = _pyplot()
    rows = evaluations[(evaluations["regime"] == "all") & (evaluations["matching"] == "samples")]
    low, high = zip(*(wilson_interval(int(r.rescued), int(r.problems)) for r in rows.itertuples(index=False)))
    rate = rows["rescue_rate"].astype(float).to_numpy()
    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT))
    ax.bar(list(rows["policy"]), rate, color="#4a78b0",
           yerr=[rate - pd.Series(low).to_numpy(), pd.Series(high).to_numpy() - rate], capsize=4)
    ax.set_ylabel("rescue rate (all failed)")
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelsize=8)
    n = int(rows["problems"].max()) if len(rows) else 0
    ax.set_title(f"{checkpoint_id}: rescue by policy, 95% Wilson intervals (n = {n})", fontsize=10)
    return _save(fig, path, f"{checkpoint_id}: rescue rate per policy on {n} failed problems, 95% Wilson intervals")
