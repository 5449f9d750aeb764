"""The quantities a person follows from checkpoint to checkpoint, one named number each.

A number inside a markdown table can be read but not charted: the UI plots a metadata entry over partitions only
when it is its own Int/Float entry. The stages put these next to their tables in ``StageResult.shown``. A value that
cannot be computed is not shown as ``nan``: it is the text ``n/a (<why>)``, from the report's own note.
"""

from __future__ import annotations

import math

import pandas as pd

from fixability_dag.core.regimes import REGIMES

DIGITS = 4


def rounded(value):
    """Floats to :data:`DIGITS` places (for reading; the database keeps full precision); anything else unchanged."""
    if isinstance(value, float) and math.isfinite(value):
        return round(value, DIGITS)
    return value


def not_computable(why: str | None) -> str:
    return f"n/a ({why})" if why else "n/a (not computed)"


def regime_shares(shares: dict[str, float]) -> dict:
    """``share_<regime>`` for every regime, so the Plots tab draws one line per regime across checkpoints."""
    return {f"share_{r}": rounded(float(shares.get(r, 0.0))) for r in REGIMES}


def accuracies(rows: list[dict]) -> dict:
    """``accuracy_<method>`` (and ``balanced_accuracy_<method>``) per scored method; the reason when there is none."""
    out = {}
    for row in rows:
        for column in ("accuracy", "balanced_accuracy"):
            value = row.get(column)
            missing = value is None or (isinstance(value, float) and not math.isfinite(value))
            out[f"{column}_{row['method']}"] = not_computable(row.get("note")) if missing else rounded(float(value))
    return out


def explained_table(frame: pd.DataFrame, note: str = "note") -> pd.DataFrame:
    """``frame`` with each missing number written ``n/a``, and the row's ``note`` (its reason) kept beside it."""
    if frame.empty:
        return frame
    out = frame.astype(object).where(frame.notna(), "n/a")
    if note in out:
        out[note] = frame[note].where(frame[note].notna(), "")
    return out


def policy_numbers(evaluations: pd.DataFrame) -> dict:
    """``rescue_rate_<policy>``, ``rescued_<policy>`` and ``tokens_<policy>`` over all failed problems (at equal
    samples; the equal-token comparison changes the baseline, not the policy's own numbers)."""
    if evaluations.empty:
        return {}
    allrows = evaluations[(evaluations["regime"] == "all") & (evaluations["matching"] == "samples")]
    out = {}
    for r in allrows.itertuples(index=False):
        out[f"rescue_rate_{r.policy}"] = rounded(float(r.rescue_rate))
        out[f"rescued_{r.policy}"] = int(r.rescued)
        out[f"tokens_{r.policy}"] = int(r.tokens)
    return out


def tokens(counts: dict, prefix: str = "") -> dict:
    """``generated_tokens`` and ``prompt_tokens`` of a phase, and ``generated_tokens_<intervention>`` /
    ``prompt_tokens_<intervention>`` for each of its interventions (:func:`fixability_dag.core.sampling.token_counts`),
    ``prefix`` before each name (the label phase's replicate: ``label_replicate_``). An unknown prompt count says
    why instead of a number."""
    unknown = not_computable(f"{counts['prompt_tokens_unknown_rollouts']} rollouts without a prompt count")
    out = {f"{prefix}generated_tokens": counts["generated_tokens"],
           f"{prefix}prompt_tokens": unknown if counts["prompt_tokens"] is None else counts["prompt_tokens"]}
    for name, c in counts["tokens_by_intervention"].items():
        out[f"{prefix}generated_tokens_{name}"] = c["generated"]
        out[f"{prefix}prompt_tokens_{name}"] = (not_computable("rollouts without a prompt count") if c["prompt"] is None
                                                else c["prompt"])
    return out
