import numpy as np
import pandas as pd
import pytest

from fixability_dag.core.rescue import (
    best_single_intervention,
    evaluate_policies,
    interventions_needed,
    label_informed_choices,
    paired_lift,
    policy_choices,
)
from fixability_dag.core.routing import fit_thresholds, route, split_point


def test_split_point_separates_two_groups():
    x = np.r_[np.random.default_rng(0).normal(0, 0.1, 40), np.random.default_rng(1).normal(1, 0.1, 40)]
    threshold, method = split_point(x)
    assert method == "gmm" and 0.3 < threshold < 0.7
    assert split_point(np.array([1.0, 1.0, 2.0])) == (1.0, "median")


def test_route_follows_the_rule_in_order():
    features = pd.DataFrame({
        "problem_id": ["steer", "unsure", "stuck"],
        "probe_shift": [0.9, 0.1, 0.1],
        "answer_dispersion": [0.1, 0.9, 0.1],
        "policy_confidence": [-0.2, -0.2, -0.2],
    })
    thresholds = fit_thresholds(features)
    plan = route(features, thresholds, "solution_prefix", retry_budget=8, intervention_budget=4).set_index("problem_id")
    assert plan.loc["steer", "action"] == "intervene" and plan.loc["steer", "intervention"] == "solution_prefix"
    assert plan.loc["steer", "budget"] == 4
    assert plan.loc["unsure", "action"] == "retry" and plan.loc["unsure", "budget"] == 8
    assert plan.loc["stuck", "action"] == "skip" and plan.loc["stuck", "budget"] == 0


def outcomes_frame():
    rows = []
    for pid, rescued in (("a", {"retry"}), ("b", {"prefix"}), ("c", set())):
        for name in ("retry", "prefix"):
            rows.append({"problem_id": pid, "intervention": name, "samples": 4, "rescued": name in rescued,
                         "tokens": 40 if name == "retry" else 20, "correct": int(name in rescued), "majority_correct": False})
    return pd.DataFrame(rows)


def test_policy_choices_and_needed_interventions():
    outcomes = outcomes_frame()
    assert best_single_intervention(outcomes) == "prefix"  # tie on rescues, fewer tokens wins
    assert label_informed_choices(outcomes, ["a", "b", "c"]) == {"a": "retry", "b": "prefix", "c": None}
    plan = pd.DataFrame({"problem_id": ["a", "b", "c"], "action": ["retry", "intervene", "skip"], "intervention": ["retry", "prefix", None]})
    choices = policy_choices(plan, outcomes, ["a", "b", "c"])
    assert choices["routed"] == {"a": "retry", "b": "prefix", "c": None}
    assert interventions_needed(choices) == {"retry": {"a", "b", "c"}, "prefix": {"a", "b", "c"}}


def test_evaluate_policies_counts_rescues_tokens_and_lift():
    truth = pd.DataFrame({"problem_id": ["a", "b", "c"], "true_regime": ["retry_recoverable", "steerable_hard", "structural"]})
    eval_rows = []
    for pid, name, correct in (("a", "retry", True), ("b", "retry", False), ("c", "retry", False), ("b", "prefix", True), ("a", "prefix", False), ("c", "prefix", False)):
        for i in range(2):
            eval_rows.append({"problem_id": pid, "intervention": name, "sample_index": i, "is_correct": correct and i == 0,
                              "num_tokens": 10})
    choices = {
        "routed": {"a": "retry", "b": "prefix", "c": None},
        "uniform_retry": {"a": "retry", "b": "retry", "c": "retry"},
    }
    ev = by_samples(evaluate_policies(choices, pd.DataFrame(eval_rows), truth))
    assert ev.loc[("routed", "all"), "rescued"] == 2 and ev.loc[("uniform_retry", "all"), "rescued"] == 1
    assert ev.loc[("routed", "all"), "tokens"] == 40 and ev.loc[("uniform_retry", "all"), "tokens"] == 60
    assert ev.loc[("routed", "all"), "compute_saved_vs_retry"] == pytest.approx(1 / 3)
    assert ev.loc[("routed", "steerable_hard"), "lift_vs_retry"] == 1.0
    assert ev.loc[("routed", "structural"), "skipped"] == 1
    # the hindsight oracle bounds every policy by construction, at the tokens of the cheapest rescuing group
    assert ev.loc[("hindsight_oracle", "all"), "rescued"] == 2 and ev.loc[("hindsight_oracle", "all"), "tokens"] == 40
    for policy in ("routed", "uniform_retry"):
        assert ev.loc[("hindsight_oracle", "all"), "rescued"] >= ev.loc[(policy, "all"), "rescued"]
    # the probe the routed plan needed is part of its cost: here it eats the whole saving
    charged = evaluate_policies(choices, pd.DataFrame(eval_rows), truth, {"routed": {"a": 10, "b": 10, "c": 10}})
    routed = by_samples(charged).loc[("routed", "all")]
    assert routed["upfront_tokens"] == 30 and routed["policy_tokens"] == 70
    assert routed["compute_saved_vs_retry"] == pytest.approx(1 - 70 / 60)
    with pytest.raises(ValueError, match="no eval rollouts"):
        evaluate_policies({"x": {"a": "greedy"}}, pd.DataFrame(eval_rows), truth)


def by_samples(evaluations: pd.DataFrame) -> pd.DataFrame:
    return evaluations[evaluations["matching"] == "samples"].set_index(["policy", "regime"])


def eval_draws(per_group: dict, tokens: int = 10) -> pd.DataFrame:
    """Eval rollouts from (problem, intervention) -> correctness of each draw in order."""
    return pd.DataFrame([{"problem_id": pid, "intervention": name, "sample_index": i, "is_correct": ok, "num_tokens": tokens}
                         for (pid, name), draws in per_group.items() for i, ok in enumerate(draws)])


THREE = pd.DataFrame({"problem_id": ["a", "b", "c"], "true_regime": ["retry_recoverable", "steerable_hard", "structural"]})
ROUTED = {"routed": {"a": "retry", "b": "prefix", "c": None}, "uniform_retry": {"a": "retry", "b": "retry", "c": "retry"}}


def test_equal_samples_scores_retry_on_its_first_eval_budget_draws_only():
    draws = eval_draws({("a", "retry"): [False, False, False, True], ("b", "retry"): [False] * 4, ("c", "retry"): [False] * 4,
                        ("b", "prefix"): [True, False]})
    ev = by_samples(evaluate_policies(ROUTED, draws, THREE, eval_budget=2))
    assert ev.loc[("uniform_retry", "all"), "rescued"] == 0 and ev.loc[("uniform_retry", "all"), "samples"] == 6
    assert ev.loc[("routed", "all"), "rescued"] == 1 and ev.loc[("routed", "all"), "retry_samples"] == 2
    # scored on all four draws, retry's late success counts: the cut is what makes the samples equal
    assert by_samples(evaluate_policies(ROUTED, draws, THREE)).loc[("uniform_retry", "all"), "rescued"] == 1


def test_equal_tokens_gives_retry_the_policys_total_tokens_and_says_when_it_runs_out():
    draws = eval_draws({("a", "retry"): [False] * 6, ("b", "retry"): [False, False, False, False, True, False],
                        ("c", "retry"): [False] * 6, ("a", "prefix"): [False, False], ("b", "prefix"): [True, False]})
    # routed: eval 2 + 2 samples (40 tokens) + probe 10 a problem (30) = 70; retry at m samples costs 30 m -> m = 2
    cheap = evaluate_policies(ROUTED, draws, THREE, {"routed": dict.fromkeys("abc", 10)}, eval_budget=2)
    row = cheap[cheap["matching"] == "tokens"].set_index(["policy", "regime"]).loc[("routed", "all")]
    assert row["policy_tokens"] == 70 and row["retry_samples"] == 2 and row["baseline_tokens"] == 60
    assert row["baseline_rescued"] == 0 and not row["token_match_capped"] and row["lift_vs_retry"] == pytest.approx(1 / 3)
    # a probe of 50 a problem: total 190, retry's 6 draws (180 tokens) run out, and retry's 5th-draw rescue counts
    dear = evaluate_policies(ROUTED, draws, THREE, {"routed": dict.fromkeys("abc", 50)}, eval_budget=2)
    row = dear[dear["matching"] == "tokens"].set_index(["policy", "regime"]).loc[("routed", "all")]
    assert row["retry_samples"] == 6 and row["token_match_capped"] and row["baseline_rescued"] == 1
    assert row["lift_vs_retry"] == pytest.approx(0.0)
    assert set(dear.loc[dear["matching"] == "tokens", "policy"]) == {"routed"}  # only policies with a cost to match


def test_paired_lift_keeps_a_width_at_small_n_when_nothing_differs():
    same = pd.Series([True, False, False, False], index=list("abcd"))
    lift, lo, hi = paired_lift(same, same.copy())
    assert lift == 0.0 and lo < 0 < hi  # a percentile bootstrap printed [+0.0, +0.0] here


def test_paired_lift_pairs_by_problem_and_matches_the_mean_difference():
    policy = pd.Series([True, True, False, True, False], index=list("abcde"))
    retry = pd.Series([False, True, True, False, False], index=list("edcba"))  # another order: paired by index
    diff = policy.astype(int) - retry.reindex(policy.index).astype(int)
    lift, lo, hi = paired_lift(policy, retry)
    assert lift == pytest.approx(diff.mean()) and lo < lift < hi and -1 <= lo and hi <= 1


def test_greedy_is_never_chosen_as_a_fresh_draw():
    rows = [{"problem_id": "a", "intervention": name, "samples": n, "rescued": name == "greedy", "tokens": 10 * n,
             "correct": int(name == "greedy"), "majority_correct": False} for name, n in (("greedy", 1), ("retry", 4))]
    outcomes = pd.DataFrame(rows)
    assert best_single_intervention(outcomes) == "retry"  # greedy rescued, but a rerun would replay that one sample
    assert label_informed_choices(outcomes, ["a"]) == {"a": None}
