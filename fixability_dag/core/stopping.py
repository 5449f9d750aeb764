"""The label phase drawn in seeded blocks, stopped once the outcome the labels need is decided.

What the labels read from a (problem, intervention) group is one bit: did any of its ``budget`` samples succeed
(``rescued``). The regime, ``rescued_by``, the label-informed choice and the best-single ranking are functions of
those bits alone. The bit is decided at the first block that holds a success: drawing the remaining blocks cannot
change it. So the stopping rule is *stop a group after its first block with a success* (a group without one is
drawn to its full budget), and because every block has its own seed, a stopped run draws exactly the prefix of
what the fixed-budget run with the same seeds draws: the labels are identical by construction. :func:`replay`
applies the rule to stored fixed-budget rollouts, which is how the tests show it.

What the rule biases: anything read from the *drawn* samples beyond the bit. A group stopped at its first success
has at least one success in few samples, so its success rate over the drawn samples overstates the true rate, and
its tokens per sample are those of the blocks that happened to run. Rates, majority votes and tokens per sample
therefore come from the **first block** alone, which every group draws whatever happens: a fixed sample size,
unbiased.

The diagnostic phase can be drawn the same way (``diagnostic_block`` / ``diagnostic_early_stop``), with a threshold
in place of "any success": a problem is *failed* when its pass rate over ``n_samples`` is at most
``fail_threshold``, i.e. when it has at most :func:`failed_cap` successes, so it is known not to be failed once its
successes exceed that cap (``decided(correct, cap)``), and only then stops. A failed problem never exceeds the cap,
so it never stops: it draws every block, with the same block seeds as the fixed-budget blocked run. Its rows, and so
its features and everything computed from them, are identical to that run's by construction, and so is the failed
set. What stopping biases is again the rate over the drawn samples (a stopped problem stopped *because* it had
many successes early); rates come from the first block of each problem (:func:`first_seeded_block`), which every
problem draws whole.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

GROUP = ["problem_id", "intervention"]


@dataclasses.dataclass(frozen=True)
class Block:
    """One seeded draw of a group: samples ``first_sample .. first_sample + n - 1``."""

    index: int
    first_sample: int
    n: int


def blocks(budget: int, size: int) -> list[Block]:
    """A budget cut into blocks of ``size`` samples (the last one shorter when ``size`` does not divide it)."""
    if budget < 1 or size < 1:
        raise ValueError(f"budget and block size must be >= 1, got {budget} and {size}")
    return [Block(i, start, min(size, budget - start)) for i, start in enumerate(range(0, budget, size))]


def decided(correct_so_far: int, threshold: int = 0) -> bool:
    """The stopping rule: a group's outcome is known once it has more than ``threshold`` successes. The label
    phase's ``rescued`` bit: ``threshold`` 0 (any success). The diagnostic phase's "not failed":
    ``threshold = failed_cap(n_samples, fail_threshold)``."""
    return correct_so_far > threshold


def failed_cap(n_samples: int, fail_threshold: float) -> int:
    """The most successes out of ``n_samples`` a failed problem can have: the largest ``c`` with
    ``c / n_samples <= fail_threshold``, computed with the same float division the failed set is read with
    (:func:`fixability_dag.core.features.failed_problem_ids`), so the two can never disagree at the boundary."""
    return max(c for c in range(n_samples + 1) if c / n_samples <= fail_threshold)


def _decision_block(rollouts: pd.DataFrame, size: int, threshold: int, keys: list[str]) -> pd.Series:
    """Per row: the index of the first block at whose end its group's successes (in sample order) exceed
    ``threshold`` (NaN when they never do)."""
    ordered = rollouts.sort_values([*keys, "sample_index"], kind="stable")
    cumulative = ordered["is_correct"].astype(int).groupby([ordered[c] for c in keys]).cumsum()
    block = ordered["sample_index"] // size
    # the rule looks at block ends only: a block decides when its group's running count exceeds the threshold
    # somewhere in it, since counts only grow and the block is drawn whole
    deciding = block.where(cumulative > threshold)
    return deciding.groupby([ordered[c] for c in keys]).transform("min").reindex(rollouts.index)


def replay(rollouts: pd.DataFrame, size: int, threshold: int = 0, keys: list[str] = GROUP) -> pd.DataFrame:
    """The rows a stopped run would have drawn, from fixed-budget rollouts drawn in blocks of ``size``.

    Each group keeps its blocks up to and including the first block at whose end it has more than ``threshold``
    successes (default: the first block with a success); a group never decided keeps all.
    """
    if rollouts.empty:
        return rollouts
    first = _decision_block(rollouts, size, threshold, keys)
    return rollouts[first.isna() | (rollouts["sample_index"] // size <= first)]


def rule_samples(rollouts: pd.DataFrame, budget: int, size: int, threshold: int,
                 keys: list[str] = GROUP) -> pd.Series:
    """Per group of ``rollouts``: how many samples the stopping rule draws given the outcomes stored, i.e. up to
    the end of the block that decides it, else the whole ``budget``. A stored group of another size was not drawn
    by the rule (stopped before it was decided, or drawn on after it was): what the asset checks look for."""
    if rollouts.empty:
        return pd.Series(dtype="int64")
    first = _decision_block(rollouts, size, threshold, keys)
    ends = ((first + 1) * size).clip(upper=budget).fillna(budget)
    return ends.groupby([rollouts[c] for c in keys]).first().astype("int64")


def first_seeded_block(rollouts: pd.DataFrame, keys: list[str] = GROUP) -> pd.DataFrame:
    """The first block of every group, read from the rows alone: the rows drawn with the seed of the group's
    sample 0 (each block of a blocked phase has a seed of its own; an unblocked group is one request, one seed, so
    this is all of its rows). Rates read from it have a fixed sample size whatever the stopping rule did."""
    if rollouts.empty:
        return rollouts
    ordered = rollouts.sort_values([*keys, "sample_index"], kind="stable")
    seed0 = ordered["seed"].groupby([ordered[c] for c in keys]).transform("first").reindex(rollouts.index)
    return rollouts[rollouts["seed"] == seed0]


def first_block(rollouts: pd.DataFrame, size: int) -> pd.DataFrame:
    """The first block of every group: the fixed-size sample rates and majorities are read from."""
    return rollouts[rollouts["sample_index"] < size] if len(rollouts) else rollouts


def savings(outcomes: pd.DataFrame) -> dict:
    """Samples and (estimated) generated tokens the stopping rule saved on one phase's outcomes.

    ``outcomes`` has per group ``budget``, ``samples`` (drawn), ``tokens`` (drawn) and the first block's
    ``first_block_samples`` / ``first_block_tokens``. Samples saved are exact; the tokens the undrawn samples would
    have cost are estimated at the first block's tokens per sample (unbiased, see the module docstring).
    """
    if outcomes.empty:
        return {"samples_budget": 0, "samples_drawn": 0, "samples_saved": 0, "tokens_drawn": 0,
                "tokens_saved_estimate": 0, "tokens_saved_share": None, "groups_stopped_early": 0}
    undrawn = (outcomes["budget"] - outcomes["samples"]).clip(lower=0)
    per_sample = outcomes["first_block_tokens"] / outcomes["first_block_samples"].clip(lower=1)
    saved = float((undrawn * per_sample).sum())
    drawn = int(outcomes["tokens"].sum())
    return {"samples_budget": int(outcomes["budget"].sum()), "samples_drawn": int(outcomes["samples"].sum()),
            "samples_saved": int(undrawn.sum()), "tokens_drawn": drawn, "tokens_saved_estimate": int(round(saved)),
            "tokens_saved_share": saved / (saved + drawn) if saved + drawn else None,
            "groups_stopped_early": int((undrawn > 0).sum())}
