"""The organism's gate table: does each planted mechanism land in the regime it was built for?

Read per checkpoint and family from what the audit stored: the diagnostic pass rate of all the family's problems,
how many failed, the share of failed problems each intervention rescued in the label phase and its first-block
success rate (the fixed block every group draws, so the rate is not biased by stopping), and the labels. The
family is the generator's (:mod:`fixability_dag.core.organism`), stored with each problem; it is read here to
*validate*, and nowhere in the audit itself.
"""

from __future__ import annotations

import pandas as pd

from fixability_dag.core.organism import EXPECTED_REGIME, EXPECTED_RESCUER, FAMILIES
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.stats import wilson_interval
from fixability_dag.pipeline.tables import markdown_table
from fixability_dag.storage.store import AuditStore


def diagnostic_pass_rates(store: AuditStore) -> pd.DataFrame:
    """Per (checkpoint, problem): diagnostic samples and correct ones of the problem's first block (every sample
    without diagnostic blocks; a fixed-size sample, unbiased under early stopping, with them), counted in the
    database (no texts read)."""
    counts = store.pass_counts(None)
    if counts.empty:
        return pd.DataFrame(columns=["checkpoint_id", "problem_id", "samples", "correct"])
    first = counts.rename(columns={"samples": "drawn", "correct": "drawn_correct", "first_block_samples": "samples",
                                   "first_block_correct": "correct"})
    return first.groupby(["checkpoint_id", "suite", "problem_id"], as_index=False)[["samples", "correct"]].sum()


def with_problem_columns(frame: pd.DataFrame, problems: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``frame`` (inner-joined) with ``columns`` of each row's problem, joined on (suite, problem_id) where both
    frames name the suite: problem ids are unique within a suite only (two suites read from one file share them),
    so an id alone may join a row to another suite's problem."""
    keys = ["suite", "problem_id"] if "suite" in frame and "suite" in problems else ["problem_id"]
    return frame.merge(problems[[*keys, *columns]].drop_duplicates(keys), on=keys)


def gate_frame(problems: pd.DataFrame, diagnostic: pd.DataFrame, outcomes: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """One row per (checkpoint, family) with the measured rates beside the design's expectation.

    ``problems`` needs problem_id and family; ``diagnostic`` checkpoint_id, problem_id, samples, correct;
    ``outcomes`` the label phase's intervention_outcomes; ``labels`` regime_labels. Rows join their problem on
    (suite, problem_id) where both frames have a suite, else on problem_id. Problems without a family (not from
    the organism) are left out.
    """
    fam = problems.dropna(subset=["family"])
    if fam.empty or diagnostic.empty:
        return pd.DataFrame()
    diag = with_problem_columns(diagnostic, fam, ["family"])
    out = with_problem_columns(outcomes, fam, ["family"]) if len(outcomes) else outcomes
    if len(labels) and "true_regime" in labels:  # production mode: the gate reads the label subsample's regimes
        labels = labels[labels["true_regime"].notna()]
    lab = with_problem_columns(labels, fam, ["family"]) if len(labels) else labels
    interventions = sorted(out["intervention"].unique()) if len(out) else []
    rows = []
    for (checkpoint, family), d in diag.groupby(["checkpoint_id", "family"], sort=False):
        samples, correct = int(d["samples"].sum()), int(d["correct"].sum())
        lo, hi = wilson_interval(correct, samples)
        mine = lab[(lab["checkpoint_id"] == checkpoint) & (lab["family"] == family)] if len(lab) else lab
        failed = len(mine)
        row = {"checkpoint": checkpoint, "family": family, "problems": len(d), "pass_rate": correct / samples if samples else None,
               "pass_ci": f"[{lo:.3f}, {hi:.3f}]", "failed": failed, "expected": EXPECTED_REGIME.get(family, ""),
               "expected_rescuer": EXPECTED_RESCUER.get(family, "none")}
        for regime in REGIMES:
            row[regime] = int((mine["true_regime"] == regime).sum()) if failed else 0
        expected = EXPECTED_REGIME.get(family)
        row["landed_as_designed"] = (row[expected] / failed if failed and expected in REGIMES else None)
        if row["landed_as_designed"] is not None:
            lo, hi = wilson_interval(row[expected], failed)
            row["landed_ci"] = f"[{lo:.2f}, {hi:.2f}]"
        else:
            row["landed_ci"] = "n/a"
        o = out[(out["checkpoint_id"] == checkpoint) & (out["family"] == family)] if len(out) else out
        for name in interventions:
            g = o[o["intervention"] == name]
            row[f"rescued_{name}"] = float(g["rescued"].mean()) if len(g) else None
            shown = g["first_block_samples"].fillna(0).sum() if len(g) else 0
            row[f"rate_{name}"] = float(g["first_block_correct"].fillna(0).sum() / shown) if shown else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    order = {f: i for i, f in enumerate(FAMILIES)}
    return frame.sort_values(["checkpoint", "family"], key=lambda s: s.map(order) if s.name == "family" else s).reset_index(drop=True)


def gate_table(store: AuditStore) -> pd.DataFrame:
    return gate_frame(store.read("problems"), diagnostic_pass_rates(store), store.read("intervention_outcomes"),
                      store.read("regime_labels"))


def gate_markdown(frame: pd.DataFrame) -> str:
    """Two tables: regimes per family against the design, and each intervention's rescue share per family."""
    if frame.empty:
        return "_No organism problems audited: the gate table needs problems with a stored family._"
    regimes = ["checkpoint", "family", "problems", "pass_rate", "pass_ci", "failed", *REGIMES, "expected",
               "landed_as_designed", "landed_ci"]
    rescue = ["checkpoint", "family", "failed", "expected_rescuer",
              *[c for c in frame.columns if c.startswith("rescued_")]]
    return "\n".join([
        "Regimes of the failed problems per family, against the design (`landed_as_designed`: the share of the "
        "family's failed problems labelled with the regime it was built for, with its 95% Wilson interval at n = "
        "`failed`; the gate criterion of analysis plan v3 is a share of at least one half):", "",
        markdown_table(frame, regimes), "",
        "Share of each family's failed problems each intervention rescued in the label phase (the first-block "
        "success rates per sample are in `fixability_dag.pipeline.gate.gate_table`):", "",
        markdown_table(frame, rescue),
    ])
