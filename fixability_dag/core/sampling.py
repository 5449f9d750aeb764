"""Generation requests, the engine protocol, and grading of completions into rollouts.

The audit asks an engine for *groups* of samples: one request per (problem, intervention) with ``n`` samples, so
the engine shares the prompt prefix across the group (vLLM's ``SamplingParams(n=...)``) instead of re-encoding it
``n`` times. Every request carries its own seed, derived from what it is for, so a re-run draws the same samples
and two phases of one audit (diagnosis vs. rescue evaluation) never reuse each other's draws.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from typing import Protocol

import pandas as pd

from fixability_dag.core.answers import MAX_ANSWER_CHARS, grade
from fixability_dag.core.problems import Problem
from fixability_dag.core.prompts import COMPLETION_STOP, Prompt

PHASES = ("diagnostic", "probe", "label", "label_replicate", "eval")
"""diagnostic: the N base samples; probe: the small batch behind probe shift; label: rescues that define the
ground-truth regime; label_replicate: the same on independent seeds (optional: label stability); eval: fresh-seed
rescues that score routing policies."""

ROLLOUT_COLUMNS = [
    "problem_id", "phase", "intervention", "sample_index", "seed", "text", "answer", "is_correct",
    "num_tokens", "prompt_tokens", "cumulative_logprob", "mean_logprob", "finish_reason", "tool_calls",
]


@dataclasses.dataclass(frozen=True)
class Decoding:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 128
    stop: tuple[str, ...] = COMPLETION_STOP
    tool: str | None = None
    """A tool the sample may call (``"calculator"``): only :class:`~fixability_dag.engines.tools.ToolEngine` runs
    such requests; a plain engine refuses them (:func:`refuse_tool_requests`)."""
    max_tool_calls: int = 8
    """Tool calls per sample at most (read only when ``tool`` is set)."""

    def __post_init__(self) -> None:
        if self.max_tool_calls < 0:
            raise ValueError("max_tool_calls must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    problem_id: str
    phase: str
    intervention: str
    prompt: Prompt
    """A text (completion mode) or a :class:`~fixability_dag.core.prompts.ChatPrompt` (the checkpoint's chat template)."""
    n: int
    seed: int
    decoding: Decoding
    first_index: int = 0
    """Sample index of the first of the ``n`` samples: a group drawn in seeded blocks (:mod:`core.stopping`) is one
    request per block, each numbering its samples where the previous block ended."""

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown phase '{self.phase}'")
        if self.n < 1:
            raise ValueError("a request needs n >= 1 samples")
        if self.first_index < 0:
            raise ValueError("first_index must be >= 0")


@dataclasses.dataclass(frozen=True)
class Completion:
    """What an engine returns for one sample, before grading."""

    text: str
    num_tokens: int
    cumulative_logprob: float | None
    finish_reason: str | None
    stop_reason: str | None = None
    """The stop string that ended the sample (``finish_reason`` ``stop``), ``None`` for end of sequence or a length
    cut: the tool loop needs to know whether a sample stopped on its ``=``."""
    tool_calls: int = 0
    """Tool calls made while generating this sample (refused ones included)."""
    tool_refusals: int = 0
    """Of those, the calls the tool refused (the model then continued by itself)."""
    prompt_tokens: int | None = None
    """Prompt tokens the engine prefilled for this sample: the request's prompt on its first sample (an engine
    prefills a request's prompt once for all its ``n`` samples), 0 on the others, plus the prompt of every
    continuation a tool sample needed. ``None``: the engine did not say (a test double, an old server), which the
    audit stores as unknown (NULL), never as 0. Counted before prefix caching: what a policy asks the engine to
    read, not what a warm cache saved it."""


def prompt_share(prompt_tokens: int | None, sample: int) -> int | None:
    """Sample ``sample``'s share of its request's ``prompt_tokens`` (:attr:`Completion.prompt_tokens`): all of it on
    the first sample, which an engine prefills once for the ``n``, 0 on the others; ``None`` stays unknown."""
    if prompt_tokens is None:
        return None
    return int(prompt_tokens) if sample == 0 else 0


class RolloutEngine(Protocol):
    """Anything that turns requests into ``n`` completions each, in request order."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[list[Completion]]: ...


class ContextAware(Protocol):
    """An engine that can say how long a prompt is and how much context it has (both vLLM engines can): the audit
    then skips what cannot fit instead of failing the step (:func:`split_by_context`)."""

    max_model_len: int

    def prompt_tokens(self, requests: Sequence[GenerationRequest]) -> list[int]: ...


SKIP_COLUMNS = ["problem_id", "phase", "intervention", "prompt_tokens", "max_tokens", "max_model_len", "reason"]


def split_by_context(requests: Sequence[GenerationRequest], prompt_tokens: Sequence[int],
                     max_model_len: int) -> tuple[list[GenerationRequest], list[dict]]:
    """The requests whose prompt plus ``max_tokens`` fits the context, and one skip row for each (problem,
    intervention) that does not.

    The rule asks room for the whole ``max_tokens``, not just one generated token (vLLM's own limit): a group whose
    samples the context would cut short of ``max_tokens`` would be compared with groups that had the full budget,
    and its truncated rollouts would read as failures of the model rather than of the prompt.
    """
    fitting, skipped, seen = [], [], set()
    for request, length in zip(requests, prompt_tokens, strict=True):
        need = int(length) + request.decoding.max_tokens
        if need <= max_model_len:
            fitting.append(request)
        elif (request.problem_id, request.intervention) not in seen:  # a group drawn in blocks is skipped once
            seen.add((request.problem_id, request.intervention))
            skipped.append({
                "problem_id": request.problem_id, "phase": request.phase, "intervention": request.intervention,
                "prompt_tokens": int(length), "max_tokens": request.decoding.max_tokens, "max_model_len": max_model_len,
                "reason": f"prompt of {length} tokens + max_tokens {request.decoding.max_tokens} = {need} exceeds the "
                          f"context of {max_model_len} tokens",
            })
    return fitting, skipped


def refuse_tool_requests(requests: Sequence[GenerationRequest], engine: str) -> None:
    """Raise if a request asks for a tool: a plain engine would sample it without the tool, silently measuring
    something else than the intervention named."""
    tooled = [r for r in requests if r.decoding.tool is not None]
    if tooled:
        r = tooled[0]
        raise ValueError(f"{engine} cannot run tool requests ({len(tooled)} in this batch, e.g. {r.problem_id}/"
                         f"{r.intervention} with tool {r.decoding.tool!r}): wrap it in "
                         f"fixability_dag.engines.tools.ToolEngine")


def derive_seed(base_seed: int, *parts: str) -> int:
    """A stable 31-bit seed from the audit seed and what the request is for (problem, phase, intervention).

    The checkpoint is deliberately *not* part of it: two checkpoints see the same random numbers for the same
    problem, which makes their differences less noisy (common random numbers).
    """
    digest = hashlib.blake2b("\x1f".join((str(base_seed), *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 1)


MAX_TEXT_CHARS = 16_384
"""Longest rollout text stored. Longer texts keep their first and last ``MAX_TEXT_CHARS // 2`` characters around
a marker that says how much was removed (the answer is usually at the end, the approach at the start)."""
TRUNCATION_MARKER = "\n[... {removed} characters removed by fixability-dag: rollout text longer than {cap} ...]\n"
_UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|[\ud800-\udfff]")


def storable_text(text: str | None) -> tuple[str, bool]:
    """Rollout text fit for a ``TEXT`` column on SQLite and PostgreSQL, and whether it was cut.

    Control characters other than tab, newline and carriage return are dropped (PostgreSQL refuses NUL in text,
    and none of them carries meaning in a completion); lone UTF-16 surrogates, which cannot be encoded as UTF-8,
    become U+FFFD; then the length is capped at :data:`MAX_TEXT_CHARS` plus the marker.
    """
    text = _UNSTORABLE.sub(lambda m: "" if m.group() < "\ud800" else "\ufffd", text or "")
    if len(text) <= MAX_TEXT_CHARS:
        return text, False
    half = MAX_TEXT_CHARS // 2
    marker = TRUNCATION_MARKER.format(removed=len(text) - 2 * half, cap=MAX_TEXT_CHARS)
    return text[:half] + marker + text[-half:], True


def _finite(value: float | None) -> float | None:
    """A log-probability as stored: non-finite (``-inf`` from a zero-probability token, NaN) is unknown."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def grade_completions(request: GenerationRequest, problem: Problem, completions: Sequence[Completion]) -> list[dict]:
    """One rollout row per completion, safe to store whatever the model wrote.

    The answer is extracted from the *whole* text (before :func:`storable_text` cuts it), is ``None`` when the
    completion states none (``is_correct`` then False), and is at most :data:`MAX_ANSWER_CHARS` long. The
    finish reason is kept as the engine gave it (``length`` marks a rollout cut by ``max_tokens``), capped to the
    column's 16 characters; ``num_tokens`` stays the engine's count even when the stored text was shortened.
    """
    rows = []
    for index, c in enumerate(completions):
        answer, correct = grade(problem.gold_answer, c.text or "")
        if answer is not None:
            answer = answer[:MAX_ANSWER_CHARS]
        text, _ = storable_text(c.text)
        cumulative = _finite(c.cumulative_logprob)
        mean_lp = None
        if cumulative is not None and c.num_tokens > 0:
            mean_lp = cumulative / c.num_tokens
        rows.append(
            {
                "suite": problem.suite,
                "problem_id": request.problem_id,
                "phase": request.phase,
                "intervention": request.intervention,
                "sample_index": request.first_index + index,
                "seed": request.seed,
                "text": text,
                "answer": answer,
                "is_correct": bool(correct),
                "num_tokens": int(c.num_tokens),
                "prompt_tokens": None if c.prompt_tokens is None else int(c.prompt_tokens),
                "cumulative_logprob": cumulative,
                "mean_logprob": mean_lp,
                "finish_reason": None if c.finish_reason is None else str(c.finish_reason)[:16],
                "tool_calls": int(c.tool_calls),
            }
        )
    return rows


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def graded_chunks(
    engine: RolloutEngine,
    requests: Sequence[GenerationRequest],
    problems: dict[str, Problem],
    chunk_size: int = 256,
) -> Iterator[tuple[Sequence[GenerationRequest], list[dict]]]:
    """Run requests through an engine chunk by chunk, yielding each chunk with its graded rows (to commit them)."""
    for chunk in chunked(list(requests), chunk_size):
        outputs = engine.generate(chunk)
        if len(outputs) != len(chunk):
            raise RuntimeError(f"engine returned {len(outputs)} results for {len(chunk)} requests")
        rows: list[dict] = []
        for request, completions in zip(chunk, outputs):
            if len(completions) != request.n:
                raise RuntimeError(
                    f"engine returned {len(completions)} samples for {request.problem_id}/{request.intervention}, "
                    f"asked for {request.n}"
                )
            rows += grade_completions(request, problems[request.problem_id], completions)
        yield chunk, rows


def generate_rollouts(
    engine: RolloutEngine,
    requests: Sequence[GenerationRequest],
    problems: dict[str, Problem],
    chunk_size: int = 256,
) -> pd.DataFrame:
    """Run requests through an engine in chunks and grade every completion (all in memory, nothing committed)."""
    rows = [row for _, chunk_rows in graded_chunks(engine, requests, problems, chunk_size) for row in chunk_rows]
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def token_counts(rollouts: pd.DataFrame) -> dict:
    """What a set of rollouts cost: generated and prompt tokens in total and per intervention (JSON-able).

    ``prompt_tokens`` is ``None`` when any row's count is unknown (NULL: an engine that does not say, or rows stored
    before prompts were counted), with ``prompt_tokens_unknown_rollouts`` saying how many: a partial sum would read
    as a cheaper audit than it was.
    """
    def prompt_sum(rows: pd.DataFrame) -> int | None:
        if "prompt_tokens" not in rows or rows["prompt_tokens"].isna().any():
            return None
        return int(rows["prompt_tokens"].sum())

    unknown = len(rollouts) if "prompt_tokens" not in rollouts else int(rollouts["prompt_tokens"].isna().sum())
    by_intervention = {
        str(name): {"generated": int(rows["num_tokens"].sum()), "prompt": prompt_sum(rows), "rollouts": len(rows)}
        for name, rows in rollouts.groupby("intervention", sort=True)} if len(rollouts) else {}
    return {"generated_tokens": int(rollouts["num_tokens"].sum()) if len(rollouts) else 0,
            "prompt_tokens": prompt_sum(rollouts) if len(rollouts) else 0,
            "prompt_tokens_unknown_rollouts": unknown, "tokens_by_intervention": by_intervention}
