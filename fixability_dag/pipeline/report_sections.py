"""The sections of docs/results.md that answer the 2026 preprint point by point: the topography by model family,
seed and recipe; transfer summarized by what differs between the two checkpoints; routed rescue on the problems
the router itself calls steerable-hard; regime recovery pooled over checkpoints.

Pure pandas: every function takes frames as the store reads them and returns table rows (dicts) or markdown lines,
so each can be tested on planted frames. :func:`fixability_dag.pipeline.report.results_markdown` reads the tables
and calls them. Every number is shown with the number of problems it rests on, and every interval is one that holds
at small n (Wilson for a proportion, Newcombe's paired interval for a difference of paired proportions). A value
that cannot be computed is written ``n/a (<why>)``, never ``nan``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from fixability_dag.core.interventions import RETRY
from fixability_dag.core.regimes import REGIMES, REPORT_METHODS
from fixability_dag.core.rescue import paired_cells, paired_lift
from fixability_dag.core.stats import wilson_interval
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.pipeline.metrics import not_computable

PREPRINT = {
    "clustering_accuracy": "84.3 ± 4.3%",
    "over_majority": "+20 points",
    "steerable_hard_lift": "+12.2%",
}
"""What the 2026 preprint reports, as it reports it; :data:`PREPRINT_STEERABLE_LIFT` is its lift as a number."""

PREPRINT_STEERABLE_LIFT = 0.122

UNKNOWN = "?"
"""How a checkpoint attribute its metadata does not record is shown (the demo checkpoints record no family)."""

META_KEYS = ("family", "seed", "recipe", "step")
"""The checkpoint attributes the preprint's comparisons are made over, read from ``checkpoints.info`` (the
checkpoint's ``fixability_checkpoint.json``); ``recipe`` and ``step`` prefer the registered columns."""


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and not np.isfinite(value)) or (
        not isinstance(value, (str, dict, list, tuple)) and bool(pd.isna(value)))


def pct(value, why: str = "no data") -> str:
    """A proportion as a percentage, or ``n/a (why)``."""
    return not_computable(why) if _missing(value) else f"{100 * value:.1f}%"


def wilson_cell(successes: int, n: int, why: str = "no problems") -> str:
    """``k of n = p% [lo, hi]`` with the Wilson 95% interval, which keeps a width at 0, at n and at small n."""
    if not n:
        return not_computable(why)
    lo, hi = wilson_interval(int(successes), int(n))
    return f"{int(successes)} of {int(n)} = {pct(successes / n)} [{pct(lo)}, {pct(hi)}]"


def points(lift: float, lo: float, hi: float) -> str:
    """A lift and its interval in percentage points."""
    return f"{100 * lift:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}]"


# --- 1. checkpoint metadata and the topography grouped by it --------------------------------------------------

def _info(value) -> dict:
    """``checkpoints.info`` as a dict: JSON columns come back as dicts, a string is parsed, anything else is {}."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _plain(value):
    """A metadata value as compared and shown: None when missing, whole floats as ints (JSON may give 7.0)."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def checkpoint_meta(checkpoints: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: ``family``, ``seed``, ``recipe``, ``step`` (None where not recorded).

    Family and seed exist only in ``checkpoints.info``; recipe and step are registered columns (filled from the
    same file or the directory name) and fall back to ``info``. A checkpoint without the file, or with other keys
    (the arithmetic demo checkpoints record no family), gets None, which the tables show as ``?``."""
    rows = []
    for r in checkpoints.itertuples(index=False) if len(checkpoints) else ():
        info = _info(getattr(r, "info", None))
        recipe, step = _plain(getattr(r, "recipe", None)), _plain(getattr(r, "training_step", None))
        rows.append({"checkpoint_id": r.checkpoint_id, "family": _plain(info.get("family")), "seed": _plain(info.get("seed")),
                     "recipe": recipe if recipe is not None else _plain(info.get("recipe")),
                     "step": step if step is not None else _plain(info.get("step"))})
    return pd.DataFrame(rows, columns=["checkpoint_id", *META_KEYS])


def shown_columns(rows: list[dict]) -> list[dict]:
    """Rows without their ``_``-prefixed keys: the numbers a computed sentence reads, not table cells."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def shown(value) -> str:
    """A metadata value in a table: ``?`` when not recorded."""
    return UNKNOWN if _plain(value) is None else str(_plain(value))


def _sort_key(value):
    """Missing last, numbers numerically, then text: metadata columns mix ints, strings and None."""
    value = _plain(value)
    if value is None:
        return (2, 0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0, str(value))


def meta_order(topo: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """The topography rows with ``family`` and ``seed`` (and the registered recipe and step where the topography
    has none), ordered by (family, seed, recipe, step, checkpoint): the checkpoints of one run read down together,
    then the run with the other seed, then the other family."""
    if topo.empty:
        return topo
    by_id = meta.set_index("checkpoint_id") if len(meta) else pd.DataFrame(columns=list(META_KEYS))
    out = topo.copy()
    for key in META_KEYS:  # family and seed from the metadata; recipe and step as registered, else the metadata's
        from_meta = [by_id.at[ck, key] if ck in by_id.index else None for ck in out["checkpoint"]]
        out[key] = ([v if _plain(v) is not None else m for v, m in zip(out[key], from_meta)] if key in out
                    else from_meta)
    keys = [tuple(_sort_key(r[k]) for k in META_KEYS) + ((str(r["suite"]),) if "suite" in out else ()) + (str(r["checkpoint"]),)
            for _, r in out.iterrows()]
    order = sorted(range(len(out)), key=lambda i: keys[i])
    return out.iloc[order].reset_index(drop=True)


def regime_counts_cell(labels: pd.DataFrame, regime: str) -> str:
    """One regime's share of labelled failed problems, with its Wilson interval and n."""
    labelled = labels[labels["true_regime"].notna()] if len(labels) else labels
    return wilson_cell(int((labelled["true_regime"] == regime).sum()) if len(labelled) else 0, len(labelled),
                       "no labelled failed problem")


def group_shares(labels: pd.DataFrame, meta: pd.DataFrame, audited: set[str] | None = None) -> list[dict]:
    """Regime shares pooled per (family, recipe) and per seed: the preprint compares its topography across recipes
    and model families, and a difference between groups means something only beside the run-to-run (seed) spread.

    Counts are (checkpoint, problem) pairs over the labelled failed problems of the group's checkpoints, each share
    with a Wilson 95% interval at that n. The same problem failed by several checkpoints of a group counts once per
    checkpoint, so the pairs are not independent and the interval is narrower than it should be: a summary, not a
    test. ``audited``: the checkpoints to count (those with a topography row); None: every checkpoint in ``labels``.
    In production mode only the label subsample has a regime, so a group's n is its labelled problems (``failed``
    says how many failed in all) and the pooled share weighs each checkpoint by its subsample, not its failures."""
    if labels.empty or meta.empty:
        return []
    labels = labels if audited is None else labels[labels["checkpoint_id"].isin(audited)]
    joined = labels.merge(meta, on="checkpoint_id", how="left")
    rows = []
    for grouping, keys in (("family, recipe", ["family", "recipe"]), ("seed", ["seed"])):
        tagged = joined.assign(**{f"_{k}": joined[k].map(shown) for k in keys})
        grouped = tagged.groupby([f"_{k}" for k in keys], sort=False)
        ordered = sorted(grouped, key=lambda item: tuple(_sort_key(None if v == UNKNOWN else v) for v in
                                                         (item[0] if isinstance(item[0], tuple) else (item[0],))))
        for value, group in ordered:
            value = value if isinstance(value, tuple) else (value,)
            labelled = group[group["true_regime"].notna()]
            rows.append({"grouped by": grouping, "group": " / ".join(value),
                         "checkpoints": int(group["checkpoint_id"].nunique()), "failed": len(group),
                         "labelled": len(labelled),
                         **{r: regime_counts_cell(group, r) for r in REGIMES}})
    return rows


# --- 2. transfer by what differs between source and target ----------------------------------------------------

TRANSFER_ORDER = ("family", "recipe", "seed", "step")
TRANSFER_TYPES = {"family": "other family", "recipe": "other recipe", "seed": "other seed", "step": "same run, other step"}
"""A pair's type is the first attribute, in the order family > recipe > seed > step, in which source and target
differ: a gpt2 checkpoint against a llama one is "other family" whatever else differs, a different recipe of the
same family is "other recipe" (an RFT checkpoint continues the SFT run, but its training data changed), a different
seed of the same family and recipe "other seed", and only a different step of one (family, recipe, seed) run is
"same run, other step". The order runs from the biggest change to the smallest, so each type isolates the change
the preprint's transfer claims are about without a bigger one behind it."""


def transfer_type(source: Mapping, target: Mapping) -> str:
    """The type of a (source, target) pair (see :data:`TRANSFER_TYPES`).

    An attribute recorded for neither checkpoint does not separate them (the arithmetic demo checkpoints record no
    family: they are one family) and the next attribute decides; one recorded for one side only cannot be
    compared, and the pair is ``undetermined (<attribute> unknown)``. A pair that differs in none of them (two
    registrations of one model, say) is ``undetermined (no recorded difference)``."""
    for key in TRANSFER_ORDER:
        a, b = _plain(source.get(key)), _plain(target.get(key))
        if a is None and b is None:
            continue
        if a is None or b is None:
            return f"undetermined ({key} unknown)"
        if str(a) != str(b):
            return TRANSFER_TYPES[key]
    return "undetermined (no recorded difference)"


def transfer_types(transfers: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """``regime_transfers`` with a ``type`` column (:func:`transfer_type` of its two checkpoints)."""
    if transfers.empty:
        return transfers.assign(type=pd.Series(dtype=object))
    by_id = {r["checkpoint_id"]: r for r in meta.to_dict("records")}
    types = [transfer_type(by_id.get(s, {}), by_id.get(t, {}))
             for s, t in zip(transfers["source_checkpoint"], transfers["target_checkpoint"])]
    return transfers.assign(type=types)


def _mean_range(values: pd.Series, why: str) -> str:
    """The mean of a pair-level accuracy with its min-max range (no interval: the pairs are not independent)."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if values.empty:
        return not_computable(why)
    if len(values) == 1:
        return pct(values.iloc[0])
    return f"{pct(values.mean())} ({pct(values.min())}-{pct(values.max())})"


def transfer_summary(typed: pd.DataFrame) -> list[dict]:
    """Per transfer type: pairs, mean (and min-max) transfer accuracy, own accuracy, target majority and plan
    agreement, and the target problems summed over the pairs.

    Every type is shown, with ``n/a`` where no pair is of it, so a claim the data cannot speak to reads as such.
    No interval is given for a mean: pairs share checkpoints (every checkpoint is a source and a target many times)
    and problems (the checkpoints of one suite fail overlapping problems), so they are not independent samples and
    a standard error over pairs would claim a precision the data does not have; the range shows the spread."""
    kinds = list(TRANSFER_TYPES.values())
    if len(typed):
        kinds += sorted(t for t in typed["type"].unique() if t not in kinds)
    rows = []
    for kind in kinds:
        g = typed[typed["type"] == kind] if len(typed) else typed
        why = "no pair of this type" if g.empty else "not computed for these pairs"
        rows.append({"type": kind, "pairs": len(g),
                     "transfer accuracy, mean (min-max)": _mean_range(g["transfer_accuracy"] if len(g) else pd.Series(dtype=float), why),
                     "own accuracy": _mean_range(g["own_accuracy"] if len(g) else pd.Series(dtype=float), why),
                     "target majority": _mean_range(g["target_majority"] if len(g) else pd.Series(dtype=float), why),
                     "plan agreement": _mean_range(g["plan_agreement"] if len(g) else pd.Series(dtype=float), why),
                     "target problems (summed)": int(g["target_problems"].sum()) if len(g) else 0})
    return rows


# --- 3. routed rescue on the problems the router calls steerable-hard -----------------------------------------

def eval_budgets(runs: pd.DataFrame, evals: pd.DataFrame) -> dict[tuple[str, str | None], tuple[int, str]]:
    """Per (checkpoint, suite): the ``eval_budget`` its rescue evaluation scored with, and where it was read.

    First the config of the checkpoint's latest successful ``rescue_evaluation`` step in ``audit_runs`` (the suite's
    override where the config has suites; the suite key None stands for every suite of the checkpoint); else the
    ``retry_samples`` of its stored equal-samples ``uniform_retry`` row, which is retry's samples per problem at
    equal samples, i.e. ``eval_budget`` (fewer only where retry's draws ran short). Not hard-coded: the budget is a
    setting, and scoring stored rollouts at another budget would compare numbers that were never the audit's."""
    budgets: dict[tuple[str, str | None], tuple[int, str]] = {}
    if len(evals) and "retry_samples" in evals:
        rows = evals[(evals["policy"] == "uniform_retry") & (evals["regime"] == "all") & (evals["matching"] == "samples")
                     & evals["retry_samples"].notna()]
        for r in rows.to_dict("records"):
            budgets[(r["checkpoint_id"], r.get("suite"))] = (int(r["retry_samples"]), "stored retry_samples")
    if len(runs):
        done = runs[(runs["asset"] == "rescue_evaluation") & (runs["status"] == "success")]
        for ck, group in done.groupby("checkpoint_id"):
            configured = _config_budgets(_info(group.sort_values(["started_at", "id"]).iloc[-1]["config"]))
            suites = {suite for (c, suite) in budgets if c == ck} | set(configured) | {None}
            for suite in suites:  # the config's own budget for every suite it has no override for
                budget = configured.get(suite, configured.get(None))
                if budget is not None:
                    budgets[(ck, suite)] = (budget, "audit config")
    return budgets


def _config_budgets(config: dict) -> dict[str | None, int]:
    """``eval_budget`` per suite of a stored audit config (key None: the config's own, for any suite)."""
    out: dict[str | None, int] = {}
    if isinstance(config.get("eval_budget"), (int, float)):
        out[None] = int(config["eval_budget"])
    try:
        configs = AuditConfig.from_mapping(config).suite_configs()
        if len(configs) > 1:
            out.update({c.suite_name: int(c.eval_budget) for c in configs})
    except (TypeError, ValueError):  # a config of another code version: its top-level budget stands
        pass
    return out


def _budget_for(budgets: Mapping, ck: str, suite) -> tuple[int, str] | None:
    return budgets.get((ck, suite)) or budgets.get((ck, None))


def _first_draws_rescue(draws: pd.DataFrame, budget: int) -> dict[str, tuple[bool, int]]:
    """Per problem of one intervention's eval draws: rescued by one of its first ``budget`` samples (the rule
    ``evaluate_policies`` scores at equal samples), and how many samples that was."""
    first = draws[draws["sample_index"] < budget]
    return {pid: (bool(g["is_correct"].any()), len(g)) for pid, g in first.groupby("problem_id")}


def predicted_steerable_hard(plans: pd.DataFrame, eval_rollouts: pd.DataFrame, labels: pd.DataFrame,
                             budgets: Mapping) -> list[dict]:
    """Per checkpoint, routed against uniform retry on the problems the router predicts steerable-hard: table
    cells, and the numbers behind them under keys starting with ``_`` (:func:`shown_columns` drops them).

    The preprint's +12.2% is a lift on steerable-hard problems, a set only labels define. Its label-free
    counterpart is what the router does: the failed problems its plan sends to a non-retry intervention (``action``
    "intervene", an intervention other than retry), because their probe moved the answers. On them: routed rescue
    (the planned intervention, rescued when one of its first ``eval_budget`` eval samples is correct) against
    uniform retry on the same problems at the same ``eval_budget`` samples, each with its Wilson interval, and the
    paired lift with Newcombe's interval (:func:`fixability_dag.core.rescue.paired_lift`, as ``lift_ci_low/high``).
    A problem lacking either eval group (a request the context could not hold) is left out and counted.

    Then how the prediction meets the labels: precision (predicted problems whose label is steerable-hard, of the
    predicted problems with a label) and recall (label steerable-hard problems predicted, of all of them), each with
    a Wilson interval at its n. In production mode only the label subsample has labels: both rest on it."""
    if plans.empty:
        return []
    keyed = "suite" in plans
    several = keyed and plans["suite"].nunique() > 1
    rows = []
    for key, plan in plans.groupby(["checkpoint_id", "suite"] if keyed else ["checkpoint_id"], sort=True):
        ck, suite = key if keyed else (key[0], None)
        predicted = plan[(plan["action"] == "intervene") & plan["intervention"].notna() & (plan["intervention"] != RETRY)]
        mine = _of(labels, ck, suite)
        truth = dict(zip(mine["problem_id"], mine["true_regime"])) if len(mine) else {}
        row = {"checkpoint": ck, **({"suite": suite} if several else {}), "predicted steerable-hard": len(predicted)}
        found = _budget_for(budgets, ck, suite)
        draws = _of(eval_rollouts, ck, suite)
        scored = None
        if found is not None and len(predicted) and len(draws):
            budget = found[0]
            by_intervention = {name: _first_draws_rescue(g, budget) for name, g in draws.groupby("intervention")}
            retry = by_intervention.get(RETRY, {})
            pairs = {}
            for p in predicted.itertuples(index=False):
                routed, baseline = by_intervention.get(p.intervention, {}).get(p.problem_id), retry.get(p.problem_id)
                if routed is not None and baseline is not None:
                    pairs[p.problem_id] = (routed[0], baseline[0])
            scored = pd.DataFrame.from_dict(pairs, orient="index", columns=["routed", "retry"])
        row["eval_budget"] = f"{found[0]} ({found[1]})" if found is not None else not_computable("not recorded")
        row.update(_rescue_cells(predicted, scored, found, draws))
        row.update(_precision_recall(set(predicted["problem_id"]), truth))
        rows.append(row)
    return rows


def _of(frame: pd.DataFrame, checkpoint_id: str, suite) -> pd.DataFrame:
    """The rows of one checkpoint (and suite, where the frame has one and a suite is given)."""
    if frame.empty:
        return frame
    keep = frame["checkpoint_id"] == checkpoint_id
    if suite is not None and "suite" in frame:
        keep &= frame["suite"] == suite
    return frame[keep]


def _rescue_cells(predicted: pd.DataFrame, scored: pd.DataFrame | None, found, draws: pd.DataFrame) -> dict:
    """Routed and retry rescue on the predicted problems, and the paired lift, or why they cannot be computed."""
    why = ("no problem routed to a non-retry intervention" if predicted.empty else "eval_budget not recorded" if found is None
           else "no eval rollouts stored" if draws.empty else "no predicted problem has both eval groups")
    if scored is None or scored.empty:
        return {"_n": 0, "scored": 0, "routed rescue [95% CI]": not_computable(why), "retry rescue [95% CI]": not_computable(why),
                "routed only / retry only": not_computable(why), "routed lift over retry [95% CI]": not_computable(why)}
    n = len(scored)
    a, b, c, _ = paired_cells(scored["routed"], scored["retry"])
    lift, lo, hi = paired_lift(scored["routed"], scored["retry"])
    missing = len(predicted) - n
    return {"_n": n, "_lift": lift, "_lift_ci_low": lo, "_lift_ci_high": hi,
            "scored": n if not missing else f"{n} ({missing} without eval draws)",
            "routed rescue [95% CI]": wilson_cell(int(scored["routed"].sum()), n),
            "retry rescue [95% CI]": wilson_cell(int(scored["retry"].sum()), n),
            "routed only / retry only": f"{b} / {c}",
            "routed lift over retry [95% CI]": f"{points(lift, lo, hi)} (n={n})"}


def _precision_recall(predicted: set[str], truth: Mapping[str, str | None]) -> dict:
    labelled = {pid for pid in predicted if truth.get(pid) is not None}
    hits = sum(truth[pid] == "steerable_hard" for pid in labelled)
    actual = {pid for pid, regime in truth.items() if regime == "steerable_hard"}
    return {"_precision": hits / len(labelled) if labelled else None,
            "label steerable-hard among predicted (precision)":
                wilson_cell(hits, len(labelled), "no predicted problem has a label"),
            "predicted among label steerable-hard (recall)":
                wilson_cell(len(actual & predicted), len(actual), "no label steerable-hard problem")}


# --- 4. regime recovery pooled over checkpoints ---------------------------------------------------------------

def _n_of(reports: pd.DataFrame) -> pd.Series:
    """The problems each report's accuracy rests on: the label subsample in production mode, else every failed one."""
    if "labelled_problems" in reports:
        return reports["labelled_problems"].fillna(reports["failed_problems"]).astype(int)
    return reports["failed_problems"].astype(int)


def _weighted(values: pd.Series, weights: pd.Series) -> tuple[float, int]:
    ok = values.notna()
    total = int(weights[ok].sum())
    return (float((values[ok] * weights[ok]).sum() / total) if total else float("nan")), total


def pooled_recovery(reports: pd.DataFrame) -> tuple[list[dict], str]:
    """Per method, its accuracy over all checkpoints weighted by the problems each rests on, beside its pooled
    shuffled-label null, and on how many checkpoints it beats that null's 95% quantile; and a sentence saying how
    many problems over how many checkpoints the pooled numbers rest on.

    The preprint reports one accuracy; ours are per checkpoint, on tens of problems each. Pooling by problems gives
    the comparable single number. The Wilson interval of the pooled accuracy treats the N (checkpoint, problem) pairs
    as independent, which they are not (checkpoints of one suite fail overlapping problems, and the cluster
    accuracies are means over mixture seeds rounded to a count): read it as a floor on the uncertainty. Balanced
    accuracy is a mean of per-regime recalls, not a proportion, so it gets no interval. The beats-the-null counts
    are the per-checkpoint test (the observed value above the null's q95), with no pooling at all."""
    if reports.empty:
        return [], "No regime report stored."
    reports = reports.assign(_n=_n_of(reports))
    methods = [m for m in REPORT_METHODS if m in set(reports["method"])]
    methods += sorted(set(reports["method"]) - set(methods))
    rows = []
    for method in methods:
        g = reports[reports["method"] == method]
        scored = g[g["accuracy"].notna()]
        acc, n = _weighted(scored["accuracy"], scored["_n"])
        null, null_n = _weighted(scored["null_mean"], scored["_n"])
        bal, bal_n = _weighted(scored["balanced_accuracy"], scored["_n"])
        bal_null, _ = _weighted(scored["balanced_null_mean"], scored["_n"])
        why = "no checkpoint has this accuracy"
        interval = wilson_cell(int(round(acc * n)), n, why) if n else not_computable(why)
        rows.append({"method": REPORT_METHODS.get(method, method), "checkpoints": int(scored["checkpoint_id"].nunique()),
                     "problems": n, "pooled accuracy [95% CI]": interval,
                     "pooled null mean": pct(null, "no null stored") + ("" if null_n == n or not null_n else f" (on {null_n})"),
                     "pooled balanced": pct(bal, why) + ("" if bal_n == n or not bal_n else f" (on {bal_n})"),
                     "pooled balanced null mean": pct(bal_null, "no null stored"),
                     "beats null q95 (accuracy)": _beats(g, "accuracy", "null_q95"),
                     "beats null q95 (balanced)": _beats(g, "balanced_accuracy", "balanced_null_q95")})
    checkpoints = reports.drop_duplicates("checkpoint_id" if "suite" not in reports else ["checkpoint_id", "suite"])
    sentence = (f"The pooled numbers rest on {int(checkpoints['_n'].sum())} problems over "
                f"{int(reports['checkpoint_id'].nunique())} checkpoints (each method's own n in its row: a method "
                "that could not be computed on a checkpoint is pooled over the others).")
    return rows, sentence


def _beats(group: pd.DataFrame, value: str, threshold: str) -> str:
    """``k of K checkpoints``: where the observed value is above its shuffled-label null's 95% quantile."""
    if value not in group or threshold not in group:
        return not_computable("no null stored")
    both = group[group[value].notna() & group[threshold].notna()]
    if both.empty:
        return not_computable("no checkpoint with both the value and its null")
    return f"{int((both[value] > both[threshold]).sum())} of {len(both)}"


# --- 5. the preprint's claims, one computed sentence each -------------------------------------------------------

def _join(values, fmt: str = "{:+.1f}") -> str:
    return ", ".join(fmt.format(v) for v in values)


def _span(values, fmt: str = "{:.0f}") -> str:
    """``low-high`` of ``values`` in ``fmt``, or the one value when they are all the same."""
    low, high = fmt.format(min(values)), fmt.format(max(values))
    return low if low == high else f"{low}-{high}"


def gate_point(gate: pd.DataFrame) -> str | None:
    """Does each mechanism land in its designed regime? Per family: on how many checkpoints at least half of its
    failed problems carry the designed label (plan v3's gate criterion), and the range of that share."""
    if gate.empty or "landed_as_designed" not in gate:
        return None
    landed = gate.dropna(subset=["landed_as_designed"])
    if landed.empty:
        return None
    parts = []
    for family, g in landed.groupby("family", sort=False):
        shares = g["landed_as_designed"].astype(float)
        parts.append(f"{family} ({g['expected'].iloc[0]}) on {int((shares >= 0.5).sum())} of {len(g)} "
                     f"({_span(100 * shares)}% of its failed problems, n = {_span(g['failed'])})")
    return ("* Family against regime (the gate table): a planted mechanism lands in its designed regime (at least half "
            "of the family's failed problems) for " + "; ".join(parts) + ". Only where it lands do the regimes "
            "exist by construction.")


def predicted_point(rows: list[dict]) -> str | None:
    """The label-free version of the preprint's steerable-hard lift: on how many checkpoints the routed lift over
    retry on the plan's own predicted steerable-hard problems has an interval above zero, and the precision."""
    if not rows:
        return None
    scored = [r for r in rows if r.get("_n")]
    empty = [r["checkpoint"] for r in rows if not r.get("_n")]
    if not scored:
        return (f"* The router predicted no steerable-hard problem with eval draws on any of {len(rows)} checkpoints "
                "(none routed to a non-retry intervention): there is no label-free steerable-hard lift to report.")
    out = (f"* On the problems the router itself predicts steerable-hard (no label needed), the routed lift over retry "
           f"at equal samples has its 95% interval above zero on {sum(r['_lift_ci_low'] > 0 for r in scored)} of "
           f"{len(scored)} checkpoints (lifts {_join(100 * r['_lift'] for r in scored)} points on n = "
           f"{', '.join(str(r['_n']) for r in scored)}); the preprint's {PREPRINT['steerable_hard_lift']} lies inside the interval on "
           f"{sum(r['_lift_ci_low'] <= PREPRINT_STEERABLE_LIFT <= r['_lift_ci_high'] for r in scored)} of them.")
    precision = [r["_precision"] for r in scored if r.get("_precision") is not None]
    if precision:
        out += (f" Of the predicted problems, {_span([100 * p for p in precision])}% carry the "
                "steerable-hard label (precision), so the lift mixes steerable-hard problems with others the "
                "intervention also rescues.")
    if empty:
        out += f" No problem was routed to an intervention on {', '.join(empty)}."
    return out


def pooled_point(reports: pd.DataFrame) -> str | None:
    """The preprint's single clustering accuracy against ours pooled by problems, beside the pooled majority class
    and the pooled shuffled-label null of the same procedure."""
    if reports.empty:
        return None
    reports = reports.assign(_n=_n_of(reports))
    pooled = {}
    for method in ("gmm", "majority_baseline"):
        g = reports[(reports["method"] == method) & reports["accuracy"].notna()]
        if len(g):
            pooled[method] = (*_weighted(g["accuracy"], g["_n"]), _weighted(g["null_mean"], g["_n"])[0])
    if "gmm" not in pooled:
        return None
    acc, n, null = pooled["gmm"]
    lo, hi = wilson_interval(int(round(acc * n)), n)
    out = (f"* Pooled over checkpoints, the GMM clusters recover {pct(acc)} [{pct(lo)}, {pct(hi)}] of the regimes "
           f"on {n} (checkpoint, problem) pairs, against a shuffled-label null of {pct(null)}")
    if "majority_baseline" in pooled:
        out += f" and a majority class of {pct(pooled['majority_baseline'][0])}"
    return out + (f" (the preprint: {PREPRINT['clustering_accuracy']}, {PREPRINT['over_majority']} over the majority; "
                  "the interval is a floor, the pairs overlap).")


def transfer_point(typed: pd.DataFrame) -> str | None:
    """Transfer of the fitted mixture across what differs between checkpoints: per type, the mean transfer accuracy
    against the target's own fitted clusters and its majority class, and how often the transferred mixture beats
    that majority; and how much of the routing plan the source's thresholds reproduce."""
    if typed.empty or "type" not in typed:
        return None
    parts, absent = [], []
    for kind in [*TRANSFER_TYPES.values(), *sorted(set(typed["type"]) - set(TRANSFER_TYPES.values()))]:
        g = typed[typed["type"] == kind].dropna(subset=["transfer_accuracy", "target_majority"])
        if g.empty:
            absent.append(kind)
            continue
        beats = int((g["transfer_accuracy"] > g["target_majority"]).sum())
        parts.append(f"{kind}: {pct(g['transfer_accuracy'].mean())} (own clusters {pct(g['own_accuracy'].mean())}, "
                     f"target majority {pct(g['target_majority'].mean())}; above the majority on {beats} of {len(g)} "
                     f"pairs; plan agreement {pct(g['plan_agreement'].mean())})")
    if not parts:
        return None
    return ("* Transfer (the preprint: the features and the router transfer across model families), mean transfer "
            "accuracy over the pairs of each type: " + "; ".join(parts) + "."
            + (f" No pair of type {', '.join(absent)}." if absent else ""))


def stability_point(rows: list[dict]) -> str | None:
    """Label agreement across label seeds: the ceiling any regime recovery can reach against these labels."""
    rows = [r for r in rows if r.get("problems")]
    if not rows:
        return None
    agreement = [r["agreement"] for r in rows]
    kappa = [r["kappa"] for r in rows if r["kappa"] is not None and np.isfinite(r["kappa"])]
    return (f"* The label phase repeated on independent seeds gives the same regime for "
            f"{_span([100 * a for a in agreement])}% of the failed problems (Cohen's kappa "
            + (_span(kappa, "{:.2f}") if kappa else "n/a")
            + f"; {len(rows)} checkpoint{'s' if len(rows) != 1 else ''}, n = "
            f"{', '.join(str(r['problems']) for r in rows)}): the labels themselves are "
              "noisy, which caps every recovery accuracy above at about that agreement.")
