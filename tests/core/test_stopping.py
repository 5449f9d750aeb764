import numpy as np
import pandas as pd
import pytest

from fixability_dag.core.features import failed_problem_ids, first_block_pass_rates, pass_rates
from fixability_dag.core.regimes import ground_truth, intervention_outcomes
from fixability_dag.core.stats import pass_at_k
from fixability_dag.core.stopping import (
    Block,
    blocks,
    failed_cap,
    first_block,
    first_seeded_block,
    replay,
    rule_samples,
    savings,
)
from fixability_dag.testing.synthetic import planted_label_rollouts


def test_blocks_cover_the_budget_and_the_last_one_may_be_short():
    assert blocks(8, 4) == [Block(0, 0, 4), Block(1, 4, 4)]
    assert blocks(10, 4) == [Block(0, 0, 4), Block(1, 4, 4), Block(2, 8, 2)]
    assert blocks(1, 4) == [Block(0, 0, 1)]
    with pytest.raises(ValueError, match="block size"):
        blocks(8, 0)


def rows(per_group: dict) -> pd.DataFrame:
    return pd.DataFrame([{"problem_id": pid, "intervention": name, "sample_index": i, "is_correct": ok,
                          "answer": "1" if ok else "2", "num_tokens": 10 + i}
                         for (pid, name), draws in per_group.items() for i, ok in enumerate(draws)])


def test_replay_keeps_each_group_up_to_its_first_block_with_a_success():
    stored = rows({("a", "retry"): [False] * 5 + [True] + [False] * 2, ("b", "retry"): [True] + [False] * 7,
                   ("c", "retry"): [False] * 8})
    kept = replay(stored, 4).groupby("problem_id").size().to_dict()
    assert kept == {"a": 8, "b": 4, "c": 8}  # success in block 1, in block 0, never
    assert len(first_block(stored, 4)) == 12


def test_replayed_labels_equal_the_fixed_budget_labels_on_planted_problems():
    """Planted problems of all three regimes, a budget of 16: stopping saves samples and changes no label."""
    labels = planted_label_rollouts(per_regime=30, budget=16, seed=0)
    stopped = replay(labels, 4)
    failed = sorted(labels["problem_id"].unique())
    truth = ground_truth(intervention_outcomes(labels, 4), failed)
    assert ground_truth(intervention_outcomes(stopped, 4), failed).equals(truth)
    assert truth["true_regime"].nunique() == 3 and len(stopped) < len(labels)
    # the bias the first block avoids: a rate over the drawn samples of stopped groups overstates the fixed one
    drawn, fixed = intervention_outcomes(stopped, 4), intervention_outcomes(labels, 4)
    assert (drawn["correct"] / drawn["samples"]).mean() > (fixed["correct"] / fixed["samples"]).mean()
    assert drawn["first_block_correct"].equals(fixed["first_block_correct"])


def test_savings_counts_undrawn_samples_and_prices_them_at_the_first_blocks_tokens():
    stored = rows({("a", "retry"): [True] + [False] * 7, ("b", "retry"): [False] * 8})
    outcomes = intervention_outcomes(replay(stored, 4), 4, {"retry": 8})
    saved = savings(outcomes)
    assert saved["samples_budget"] == 16 and saved["samples_drawn"] == 12 and saved["samples_saved"] == 4
    assert saved["tokens_saved_estimate"] == 4 * (10 + 11 + 12 + 13) / 4 and saved["groups_stopped_early"] == 1
    assert savings(outcomes.iloc[0:0])["samples_saved"] == 0


# --- the diagnostic phase: blocks, a problem stopped once it is known not to be failed ---

def test_the_failed_cap_is_the_most_successes_a_failed_problem_can_have():
    assert failed_cap(16, 0.0) == 0 and failed_cap(8, 0.25) == 2 and failed_cap(7, 0.5) == 3
    assert failed_cap(10, 0.3) == 3  # 0.3 * 10 is 3.0000000000000004 in floats; 3 / 10 <= 0.3 all the same
    for n, threshold in [(16, 0.0), (8, 0.25), (10, 0.3), (10, 0.7), (64, 0.1)]:
        cap = failed_cap(n, threshold)
        assert cap / n <= threshold < (cap + 1) / n  # exactly the failed rule's boundary


def diagnostic_rows(outcomes: dict, size: int) -> pd.DataFrame:
    """Diagnostic rows of each problem, one seed per block of ``size`` (as build_requests numbers them)."""
    return pd.DataFrame([{"problem_id": pid, "intervention": "retry", "sample_index": i, "seed": 1000 * k + i // size,
                          "is_correct": ok, "num_tokens": 5}
                         for k, (pid, draws) in enumerate(outcomes.items()) for i, ok in enumerate(draws)])


def test_the_diagnostic_rule_stops_a_problem_at_the_block_that_takes_it_above_the_cap():
    stored = diagnostic_rows({"a": [True, False, True, True, False, False, True, True],  # 3rd success in block 1
                              "b": [True, True, False, False, False, False, False, False],  # 2 = cap: failed
                              "c": [True, True, True, False, True, False, False, True]}, 2)  # 3rd in block 1
    stopped = replay(stored, 2, threshold=2, keys=["problem_id"])
    assert stopped.groupby("problem_id").size().to_dict() == {"a": 4, "b": 8, "c": 4}
    assert rule_samples(stopped, 8, 2, 2, ["problem_id"]).to_dict() == {"a": 4, "b": 8, "c": 4}
    # the rule read from fewer or more rows than it draws says how many it would have drawn
    assert rule_samples(stored, 8, 2, 2, ["problem_id"]).to_dict() == {"a": 4, "b": 8, "c": 4}
    assert rule_samples(stored[stored["sample_index"] < 2], 8, 2, 2, ["problem_id"]).to_dict() == {"a": 8, "b": 8, "c": 8}
    assert first_seeded_block(stopped, ["problem_id"]).groupby("problem_id").size().to_dict() == {"a": 2, "b": 2, "c": 2}
    one_request = stored.assign(seed=stored["problem_id"].map({"a": 1, "b": 2, "c": 3}))  # unblocked: all rows
    assert first_seeded_block(one_request, ["problem_id"]).equals(one_request)


def simulated_audit(p: float, problems: int, n: int, size: int, cap: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``problems`` problems of true pass rate ``p``: their fixed-budget blocked rows and what the stopping rule
    draws of them (the same blocks: a stopped run draws a prefix of the fixed one)."""
    rng = np.random.default_rng(seed)
    draws = rng.random((problems, n)) < p
    fixed = pd.DataFrame({"problem_id": np.repeat(np.arange(problems), n).astype(str),
                          "sample_index": np.tile(np.arange(n), problems),
                          "seed": np.repeat(np.arange(problems), n) * 100 + np.tile(np.arange(n) // size, problems),
                          "is_correct": draws.ravel(), "num_tokens": 1})
    return fixed, replay(fixed, size, threshold=cap, keys=["problem_id"])


@pytest.mark.parametrize("p", [0.2, 0.35, 0.6])
def test_first_block_rates_are_unbiased_under_the_diagnostic_rule_and_the_drawn_mean_is_not(p):
    """Simulated problems of known pass rate, 16 samples in blocks of 4, failed at <= 2 successes: the first-block
    rate the audit reports averages to the true rate (and pass@k from it, k <= the block, to the true pass@k); the
    rate over the drawn samples overstates it, by far more than the simulation's noise."""
    n, size, cap, problems = 16, 4, failed_cap(16, 0.125), 6000
    fixed, stopped = simulated_audit(p, problems, n, size, cap, seed=int(p * 100))
    assert len(stopped) < len(fixed)  # the rule did stop problems
    rates = first_block_pass_rates(stopped)
    se = np.sqrt(p * (1 - p) / size / problems)
    assert abs(rates["pass_rate"].mean() - p) < 4 * se
    pass2 = np.mean([pass_at_k(size, int(c), 2) for c in rates["correct"]])
    assert abs(pass2 - (1 - (1 - p) ** 2)) < 4 * np.sqrt(0.25 / problems)
    naive = pass_rates(stopped)["pass_rate"].mean()
    assert naive - p > 10 * se, f"the drawn-sample mean {naive:.3f} should overstate {p}"
    # and the failed set is exactly the fixed budget's
    assert failed_problem_ids(stopped, 0.125) == failed_problem_ids(fixed, 0.125)
