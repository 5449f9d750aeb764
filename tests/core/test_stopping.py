import pandas as pd
import pytest

from fixability_dag.core.regimes import ground_truth, intervention_outcomes
from fixability_dag.core.stopping import Block, blocks, first_block, replay, savings
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
