"""Rescue evaluation: routing policies scored on fresh-seed rollouts, against retry at equal samples and at equal
generated tokens.

Every policy picks, per failed problem, one intervention (or skip) and gets the same number of samples for it, drawn
in the ``eval`` phase with seeds never used to decide the ground truth. A problem is rescued when at least one of
those samples is correct. Compute is counted in generated tokens, so skipping is visible as compute saved, and a
policy pays for what it needed to generate before choosing (the probe, or the label phase). Retry, the baseline,
is drawn deeper than the rest so that it can also be given each policy's whole cost in tokens
(:func:`retry_at_tokens`): routing that only wins at equal samples because its probe is free does not win.

Policies:

* ``routed`` - the training-free plan from the features;
* ``uniform_retry`` - retry everything: what teams do by default;
* ``best_single`` - the one intervention that rescued most failed problems in the *label* phase, scored on the
  *eval* phase for everything;
* ``label_informed`` - per problem, the cheapest intervention that rescued it in the label phase (skip when none
  did). It uses the labels, so it is a reference, not a bound: rescues seen once at p ~ 1% rarely repeat;
* ``hindsight_oracle`` - per problem, rescued when *any* eval-phase group sampled for it (by any policy) rescued
  it, at the tokens of the cheapest such group: an upper bound on every other policy by construction.

Deterministic interventions (greedy) are measured once, in the label phase, and are never a choice here: a second
greedy run replays the first, so counting it as a fresh draw would score one sample twice.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from fixability_dag.core.interventions import CATALOG, RETRY
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.stats import newcombe_paired_diff, wilson_interval

POLICIES = ("routed", "uniform_retry", "best_single", "label_informed", "hindsight_oracle")
HINDSIGHT = "hindsight_oracle"


def is_deterministic(intervention: str) -> bool:
    spec = CATALOG.get(intervention)
    return spec is not None and spec.deterministic


def _stochastic(outcomes: pd.DataFrame) -> pd.DataFrame:
    return outcomes[~outcomes["intervention"].map(is_deterministic)] if len(outcomes) else outcomes


def best_single_intervention(outcomes: pd.DataFrame) -> str:
    """The intervention with the most label-phase rescues (ties: fewer tokens, then name)."""
    outcomes = _stochastic(outcomes)
    if outcomes.empty:
        return RETRY
    table = outcomes.groupby("intervention").agg(rescues=("rescued", "sum"), tokens=("tokens", "sum")).reset_index()
    table = table.sort_values(["rescues", "tokens", "intervention"], ascending=[False, True, True])
    return str(table.iloc[0]["intervention"])


def label_informed_choices(outcomes: pd.DataFrame, problem_ids: list[str]) -> dict[str, str | None]:
    """Per problem, the cheapest (fewest tokens per sample) stochastic intervention that rescued it in the label
    phase. Tokens per sample are read from the first block where the outcomes have one: a group stopped early
    drew the blocks its success happened to be in (:mod:`fixability_dag.core.stopping`)."""
    outcomes = _stochastic(outcomes)
    rescued = outcomes[outcomes["rescued"]].copy()
    tokens, samples = (("first_block_tokens", "first_block_samples") if "first_block_tokens" in rescued
                       else ("tokens", "samples"))
    rescued["tokens_per_sample"] = rescued[tokens] / rescued[samples].clip(lower=1)
    choice: dict[str, str | None] = {pid: None for pid in problem_ids}
    for pid, group in rescued.groupby("problem_id"):
        if pid in choice:
            choice[pid] = str(group.sort_values(["tokens_per_sample", "intervention"]).iloc[0]["intervention"])
    return choice


SUBSAMPLE_POLICIES = ("label_informed", HINDSIGHT)
"""Policies that need every problem's own label-phase outcomes (or, for the oracle, the label-informed choice's
eval draws): in production mode they exist, and are scored, on the label subsample only."""


def policy_choices(plan: pd.DataFrame, outcomes: pd.DataFrame, problem_ids: list[str],
                   labelled: Collection[str] | None = None) -> dict[str, dict[str, str | None]]:
    """What each policy with a choice picks per problem (the hindsight oracle picks after the eval draws).

    ``labelled``: the problems with label-phase outcomes (None: all of them). ``best_single``'s one choice is read
    from those outcomes and applied to every problem; ``label_informed`` chooses for the labelled problems only."""
    routed = {r.problem_id: (None if r.action == "skip" else r.intervention) for r in plan.itertuples(index=False)}
    best = best_single_intervention(outcomes)
    informed = problem_ids if labelled is None else [pid for pid in problem_ids if pid in set(labelled)]
    return {
        "routed": {pid: routed.get(pid) for pid in problem_ids},
        "uniform_retry": {pid: RETRY for pid in problem_ids},
        "best_single": {pid: best for pid in problem_ids},
        "label_informed": label_informed_choices(outcomes, informed),
    }


def interventions_needed(choices: dict[str, dict[str, str | None]]) -> dict[str, set[str]]:
    """Which (intervention -> problems) the eval phase must sample so every policy can be scored."""
    needed: dict[str, set[str]] = {}
    for per_problem in choices.values():
        for pid, name in per_problem.items():
            if name is not None:
                needed.setdefault(name, set()).add(pid)
    return needed


def evaluate_policies(
    choices: dict[str, dict[str, str | None]],
    eval_rollouts: pd.DataFrame,
    truth: pd.DataFrame,
    upfront_tokens: dict[str, dict[str, int]] | None = None,
    eval_budget: int | None = None,
    labelled: Collection[str] | None = None,
) -> pd.DataFrame:
    """Rescue rate, tokens and intervals per policy and per ground-truth regime (``all`` for the whole set), at
    two matchings of compute (column ``matching``):

    * ``samples`` - every chosen (problem, intervention) is scored on its first ``eval_budget`` eval samples
      (all of them when ``None``), and compared with uniform retry at the same ``eval_budget`` samples a problem;
    * ``tokens`` - the same policy outcomes, compared with uniform retry given the policy's *total* generated
      tokens (eval plus what it generated before choosing): retry gets the number of samples per problem ``m``
      whose tokens come nearest that total, read from the first ``m`` of its eval draws (``retry_samples``;
      ``token_match_capped`` when retry's draws ran out before the total was reached, which favours the policy).

    ``tokens`` counts the eval samples a policy spends; ``upfront_tokens`` (policy -> problem -> tokens) what it had
    to generate before it could choose: the probe batches for ``routed``, the label phase for ``best_single`` and
    ``label_informed``. ``policy_tokens`` is their sum. ``baseline_rescued`` / ``baseline_tokens`` are retry's at
    that matching, ``compute_saved_vs_retry`` compares ``policy_tokens`` with ``baseline_tokens``.

    ``labelled`` (production mode): the label subsample, the problems with a ground truth. The regimes of ``truth``
    are None elsewhere, so every regime stratum holds subsample problems only; the hindsight oracle is built on
    the subsample (where every policy drew); a policy of :data:`SUBSAMPLE_POLICIES` is compared with retry on the
    subsample's problems. Every row says whether it rests on the subsample (``label_subsample``) and of how many
    failed problems (``failed_problems``: the rows of ``truth``).
    """
    upfront_tokens = upfront_tokens or {}
    ordered = eval_rollouts.sort_values(["problem_id", "intervention", "sample_index"], kind="stable")
    scored = ordered if eval_budget is None else ordered[ordered["sample_index"] < eval_budget]
    groups = {key: g for key, g in scored.groupby(["problem_id", "intervention"])}
    regime_of = dict(zip(truth["problem_id"], truth["true_regime"]))
    per_problem = []
    for policy, per in choices.items():
        for pid, name in per.items():
            if name is None:
                rescued, tokens, samples = False, 0, 0
            else:
                g = groups.get((pid, name))
                if g is None:
                    raise ValueError(f"no eval rollouts for {pid}/{name} needed by policy {policy}")
                rescued, tokens, samples = bool(g["is_correct"].any()), int(g["num_tokens"].sum()), len(g)
            per_problem.append({"policy": policy, "problem_id": pid, "regime": regime_of[pid], "intervention": name,
                                "rescued": rescued, "tokens": tokens, "samples": samples,
                                "upfront_tokens": int(upfront_tokens.get(policy, {}).get(pid, 0))})
    outcomes = pd.DataFrame(per_problem)
    if "uniform_retry" in choices:
        sampled = outcomes if labelled is None else outcomes[outcomes["problem_id"].isin(set(labelled))]
        outcomes = pd.concat([outcomes, _hindsight(sampled, regime_of)], ignore_index=True)
        choices = {**choices, HINDSIGHT: {}}
    outcomes["policy_tokens"] = outcomes["tokens"] + outcomes["upfront_tokens"]
    replicated = set()
    if "replicate_regime" in truth and truth["replicate_regime"].notna().any():
        replicated = set(truth.loc[truth["true_regime"] == truth["replicate_regime"], "problem_id"])
    strata = ("all", *REGIMES, *([f"{REPLICATED}{r}" for r in REGIMES] if replicated else []))
    retry = outcomes[outcomes["policy"] == "uniform_retry"]
    retry_samples = int(retry["samples"].max()) if len(retry) else 0
    subsample = None if labelled is None else set(labelled)
    population = len(truth)  # a row per failed problem, its regime None outside the label subsample

    def baseline_for(policy: str, frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["problem_id"].isin(subsample)] if (subsample is not None
                                                                     and policy in SUBSAMPLE_POLICIES) else frame

    rows = []
    for policy in choices:
        mine = outcomes[outcomes["policy"] == policy]
        rows += _stratum_rows(policy, mine, baseline_for(policy, retry), strata, replicated, "samples", retry_samples, False)
    draws = ordered[ordered["intervention"] == RETRY]
    for policy in TOKEN_MATCHED:
        mine = outcomes[outcomes["policy"] == policy]
        if policy not in choices or mine.empty or draws.empty:
            continue
        m, capped, baseline = retry_at_tokens(draws, list(mine["problem_id"]), int(mine["policy_tokens"].sum()))
        baseline["regime"] = baseline["problem_id"].map(regime_of)
        rows += _stratum_rows(policy, mine, baseline, strata, replicated, "tokens", m, capped)
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["label_subsample"] = bool(subsample is not None) & (frame["policy"].isin(SUBSAMPLE_POLICIES)
                                                                 | (frame["regime"] != "all"))
        frame["failed_problems"] = population
    return frame


TOKEN_MATCHED = ("routed", "best_single", "label_informed")
"""Policies also compared with retry at their own total tokens (the hindsight oracle is a bound, not a cost)."""


def _stratum_rows(policy: str, mine: pd.DataFrame, baseline: pd.DataFrame, strata, replicated: set[str],
                  matching: str, retry_samples: int, capped: bool) -> list[dict]:
    """One row per stratum: the policy's rescues and cost beside the retry baseline of one matching."""
    rows = []
    for stratum in strata:
        sub, base = _stratum(mine, stratum, replicated), _stratum(baseline, stratum, replicated)
        n, k = len(sub), int(sub["rescued"].sum())
        lo, hi = wilson_interval(k, n)
        lift = lift_lo = lift_hi = float("nan")
        cells = (None, None, None)
        if n and policy != "uniform_retry":
            pairs = (sub.set_index("problem_id")["rescued"], base.set_index("problem_id")["rescued"])
            lift, lift_lo, lift_hi = paired_lift(*pairs)
            cells = paired_cells(*pairs)[:3]
        retry_cost = float(base["policy_tokens"].sum())
        rows.append({
            "policy": policy, "regime": stratum, "matching": matching, "problems": n, "rescued": k,
            "rescue_rate": k / n if n else float("nan"), "rate_ci_low": lo, "rate_ci_high": hi,
            "tokens": int(sub["tokens"].sum()), "samples": int(sub["samples"].sum()),
            "upfront_tokens": int(sub["upfront_tokens"].sum()), "policy_tokens": int(sub["policy_tokens"].sum()),
            "skipped": int((sub["samples"] == 0).sum()),
            "compute_saved_vs_retry": (1 - sub["policy_tokens"].sum() / retry_cost) if retry_cost else float("nan"),
            "lift_vs_retry": lift, "lift_ci_low": lift_lo, "lift_ci_high": lift_hi,
            "retry_samples": retry_samples, "baseline_rescued": int(base["rescued"].sum()),
            "baseline_tokens": int(retry_cost), "token_match_capped": bool(capped),
            "pairs_both": cells[0], "pairs_policy_only": cells[1], "pairs_retry_only": cells[2],
        })
    return rows


def retry_at_tokens(retry_rollouts: pd.DataFrame, problem_ids: list[str], total_tokens: int) -> tuple[int, bool, pd.DataFrame]:
    """Uniform retry given ``total_tokens`` over ``problem_ids``: the samples per problem ``m`` whose summed tokens
    (first ``m`` draws of every problem) come nearest the total, whether the draws ran out before reaching it, and
    per problem the outcome of those ``m`` draws (``rescued``, ``tokens``, ``samples``, ``policy_tokens``)."""
    draws = retry_rollouts[retry_rollouts["problem_id"].isin(problem_ids)].sort_values(["problem_id", "sample_index"], kind="stable")
    per = {pid: g for pid, g in draws.groupby("problem_id")}
    missing = [pid for pid in problem_ids if pid not in per]
    if missing:
        raise ValueError(f"no retry eval rollouts for {missing[0]} (and {len(missing) - 1} more)")
    available = min(len(g) for g in per.values())
    tokens = np.zeros(available + 1)
    for g in per.values():
        tokens[1:] += np.cumsum(g["num_tokens"].to_numpy()[:available])
    m = int(np.argmin(np.abs(tokens - total_tokens)))
    capped = m == available and tokens[available] < total_tokens
    rows = [{"problem_id": pid, "rescued": bool(g["is_correct"].iloc[:m].any()), "tokens": int(g["num_tokens"].iloc[:m].sum()),
             "samples": m} for pid, g in per.items()]
    frame = pd.DataFrame(rows, columns=["problem_id", "rescued", "tokens", "samples"])
    frame["policy_tokens"] = frame["tokens"]
    return m, bool(capped), frame


REPLICATED = "replicated:"
"""Prefix of the strata restricted to problems whose regime came out the same in the replicate label phase."""


def _stratum(frame: pd.DataFrame, stratum: str, replicated: set[str]) -> pd.DataFrame:
    if stratum == "all":
        return frame
    if stratum.startswith(REPLICATED):
        return frame[(frame["regime"] == stratum[len(REPLICATED):]) & frame["problem_id"].isin(replicated)]
    return frame[frame["regime"] == stratum]


def _hindsight(per_problem: pd.DataFrame, regime_of: dict) -> pd.DataFrame:
    """Per problem, the cheapest eval group any policy sampled that rescued it (else skip, 0 tokens)."""
    sampled = per_problem[per_problem["intervention"].notna()].drop_duplicates(["problem_id", "intervention"])
    rows = []
    for pid in per_problem["problem_id"].drop_duplicates():
        wins = sampled[(sampled["problem_id"] == pid) & sampled["rescued"]].sort_values(["tokens", "intervention"])
        best = wins.iloc[0] if len(wins) else None
        rows.append({"policy": HINDSIGHT, "problem_id": pid, "regime": regime_of[pid],
                     "intervention": None if best is None else best["intervention"], "rescued": best is not None,
                     "tokens": 0 if best is None else int(best["tokens"]), "samples": 0 if best is None else int(best["samples"]),
                     "upfront_tokens": 0})
    return pd.DataFrame(rows)


def paired_lift(policy: pd.Series, retry: pd.Series, confidence: float = 0.95) -> tuple[float, float, float]:
    """Rescue-rate difference of a policy over uniform retry on the same problems, with Newcombe's paired interval.

    The outcomes are paired binary (rescued or not, per problem, under both policies), and n is small (a handful of
    steerable-hard problems per checkpoint): a percentile bootstrap of the differences collapses to [0, 0] whenever
    every difference is 0, claiming certainty it does not have. Newcombe's hybrid score interval (method 10) keeps
    a width that holds at small n.
    """
    return newcombe_paired_diff(*paired_cells(policy, retry), confidence)


def paired_cells(policy: pd.Series, retry: pd.Series) -> tuple[int, int, int, int]:
    """The 2x2 table of paired outcomes on the problems both series hold: (both rescued, policy only, retry only,
    neither). Stored per evaluation row, so pooled intervals over checkpoints can add the cells."""
    both = pd.concat([policy.astype(bool).rename("p"), retry.astype(bool).rename("r")], axis=1, join="inner")
    a = int((both["p"] & both["r"]).sum())
    b = int((both["p"] & ~both["r"]).sum())
    c = int((~both["p"] & both["r"]).sum())
    return a, b, c, len(both) - a - b - c


def summarize(evaluations: pd.DataFrame) -> dict:
    """Headline figures: rescue per policy, and routed lift over retry on steerable-hard problems (at equal samples
    and at equal tokens)."""
    by_samples = evaluations[evaluations["matching"] == "samples"]
    allrows = by_samples[by_samples["regime"] == "all"].set_index("policy")
    out = {f"rescue_rate_{p}": float(allrows.loc[p, "rescue_rate"]) for p in allrows.index}
    for matching, suffix in (("samples", ""), ("tokens", "_equal_tokens")):
        steer = evaluations[(evaluations["regime"] == "steerable_hard") & (evaluations["policy"] == "routed")
                            & (evaluations["matching"] == matching)]
        if not steer.empty:
            r = steer.iloc[0]
            out[f"steerable_hard_lift{suffix}"] = float(r["lift_vs_retry"])
            out[f"steerable_hard_lift{suffix}_ci"] = [float(r["lift_ci_low"]), float(r["lift_ci_high"])]
    out["compute_saved_routed_vs_retry"] = float(allrows.loc["routed", "compute_saved_vs_retry"]) if "routed" in allrows.index else float("nan")
    return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in out.items()}
