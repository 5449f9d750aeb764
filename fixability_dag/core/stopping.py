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


def decided(correct_so_far: int) -> bool:
    """The stopping rule: a group's ``rescued`` bit is known once any of its samples succeeded."""
    return correct_so_far > 0


def replay(rollouts: pd.DataFrame, size: int) -> pd.DataFrame:
    """The rows a stopped run would have drawn, from fixed-budget rollouts drawn in blocks of ``size``.

    Each group keeps its blocks up to and including the first block with a success; a group with none keeps all.
    """
    if rollouts.empty:
        return rollouts
    block = rollouts["sample_index"] // size
    success_block = block.where(rollouts["is_correct"].astype(bool))
    first = success_block.groupby([rollouts[c] for c in GROUP]).transform("min")
    return rollouts[first.isna() | (block <= first)]


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
