"""Generation requests, the engine protocol, and grading of completions into rollouts.

The audit asks an engine for *groups* of samples: one request per (problem, intervention) with ``n`` samples, so
the engine shares the prompt prefix across the group (vLLM's ``SamplingParams(n=...)``) instead of re-encoding it
``n`` times. Every request carries its own seed, derived from what it is for, so a re-run draws the same samples
and two phases of one audit (diagnosis vs. rescue evaluation) never reuse each other's draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import pandas as pd

from fixability_dag.answers import grade
from fixability_dag.problems import Problem

PHASES = ("diagnostic", "probe", "label", "eval")
"""diagnostic: the N base samples; probe: the small batch behind probe shift; label: rescues that define the
ground-truth regime; eval: fresh-seed rescues that score routing policies."""

ROLLOUT_COLUMNS = [
    "problem_id", "phase", "intervention", "sample_index", "seed", "text", "answer", "is_correct",
    "num_tokens", "cumulative_logprob", "mean_logprob", "finish_reason",
]


@dataclasses.dataclass(frozen=True)
class Decoding:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = ("\n\n",)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    problem_id: str
    phase: str
    intervention: str
    prompt: str
    n: int
    seed: int
    decoding: Decoding

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase '{self.phase}'")
        if self.n < 1:
            raise ValueError("a request needs n >= 1 samples")


@dataclasses.dataclass(frozen=True)
class Completion:
    """What an engine returns for one sample, before grading."""

    text: str
    num_tokens: int
    cumulative_logprob: float | None
    finish_reason: str | None


class RolloutEngine(Protocol):
    """Anything that turns requests into ``n`` completions each, in request order."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]: ...


def derive_seed(base_seed: int, *parts: str) -> int:
    """A stable 31-bit seed from the audit seed and what the request is for (problem, phase, intervention).

    The checkpoint is deliberately *not* part of it: two checkpoints see the same random numbers for the same
    problem, which makes their differences less noisy (common random numbers).
    """
    digest = hashlib.blake2b("\x1f".join((str(base_seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


def grade_completions(request: GenerationRequest, problem: Problem, completions: Sequence[Completion]) -> list[dict]:
    rows = []
    for index, c in enumerate(completions):
        answer, correct = grade(problem.gold_answer, c.text)
        mean_lp = None
        if c.cumulative_logprob is not None and c.num_tokens > 0:
            mean_lp = c.cumulative_logprob / c.num_tokens
        rows.append(
            {
                "problem_id": request.problem_id,
                "phase": request.phase,
                "intervention": request.intervention,
                "sample_index": index,
                "seed": request.seed,
                "text": c.text,
                "answer": answer,
                "is_correct": bool(correct),
                "num_tokens": int(c.num_tokens),
                "cumulative_logprob": c.cumulative_logprob,
                "mean_logprob": mean_lp,
                "finish_reason": c.finish_reason,
            }
        )
    return rows


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def generate_rollouts(
    engine: RolloutEngine,
    requests: Sequence[GenerationRequest],
    problems: dict[str, Problem],
    chunk_size: int = 256,
) -> pd.DataFrame:
    """Run requests through an engine in chunks and grade every completion."""
    rows: list[dict] = []
    for chunk in chunked(list(requests), chunk_size):
        outputs = engine.generate(chunk)
        if len(outputs) != len(chunk):
            raise RuntimeError(f"engine returned {len(outputs)} results for {len(chunk)} requests")
        for request, completions in zip(chunk, outputs):
            if len(completions) != request.n:
                raise RuntimeError(
                    f"engine returned {len(completions)} samples for {request.problem_id}/{request.intervention}, "
                    f"asked for {request.n}"
                )
            rows += grade_completions(request, problems[request.problem_id], completions)
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)
